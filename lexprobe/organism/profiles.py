"""What determines an organism suite, as plain data: profiles (training schedule, shape, corpus, plant) and the
named ones. Nothing here imports torch, so a suite can be named, fingerprinted and found without the trainer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from lexprobe.base.files import fingerprint
from lexprobe.base.heads import Head
from lexprobe.organism.corpus import CorpusConfig, Lexicon


@dataclass(frozen=True)
class Plant:
    """Which heads may read the cue: ``n_heads`` heads in distinct layers, drawn by ``(salt, seed)``; ``readers``:
    whose edges to the cue are cut in the other heads (the noun's tokens, or every later token of the sentence)."""

    n_heads: int = 2
    salt: int = 17
    readers: Literal["noun", "sentence"] = "sentence"
    leak_penalty: float = 10.0  # weight of the closed heads' unmasked attention mass on the cue in the loss
    opens: tuple[int, ...] = ()  # per designated head (in :meth:`heads` order), the step its edges open; (): step 0
    mode: Literal["all", "one"] = "all"  # "one": each sequence leaves one open designated head open (an OR)
    decoys: tuple[str, ...] = ()  # one decoy head per entry, of a kind of DECOY_KINDS
    decoys_from: int = 0  # the step from which the decoys are trained to attend (the planted onset: like carriers)
    decoy_pull: float = 1.0  # weight of the decoys' attention loss (squared gap to a rising target mass)

    def __post_init__(self) -> None:
        if self.readers not in ("noun", "sentence"):
            raise ValueError(f"plant readers {self.readers!r}: choose noun or sentence")
        if not self.leak_penalty >= 0:
            raise ValueError(f"plant leak_penalty {self.leak_penalty!r}: use a weight of at least 0")
        if self.opens and (len(self.opens) != self.n_heads or min(self.opens) < 0):
            raise ValueError(f"plant opens {self.opens!r}: one step (>= 0) per designated head ({self.n_heads})")
        if self.mode not in ("all", "one"):
            raise ValueError(f"plant mode {self.mode!r}: choose all (every designated head open) or one (one per "
                             "sequence)")
        bad = [k for k in self.decoys if k not in DECOY_KINDS]
        if bad:
            raise ValueError(f"plant decoys {bad}: choose among {DECOY_KINDS}")

    @property
    def plain(self) -> bool:
        """Every designated head open at every step of every sequence (the original plant)."""
        return not self.opens and self.mode == "all"

    def heads(self, seed: int, n_layers: int, n_heads: int) -> tuple[Head, ...]:
        """The designated (layer, head) pairs of one training seed."""
        if not 1 <= self.n_heads <= n_layers:
            raise ValueError(f"a plant of {self.n_heads} heads in distinct layers needs 1..{n_layers} of them")
        rng = np.random.default_rng([self.salt, seed])
        layers = rng.choice(n_layers, self.n_heads, replace=False)
        return tuple(sorted((int(layer), int(rng.integers(n_heads))) for layer in layers))

    def decoy_heads(self, seed: int, n_layers: int, n_heads: int) -> tuple[tuple[int, int, str], ...]:
        """The seed's decoy heads as (layer, head, kind), in ``decoys`` order: distinct heads outside the designated
        ones, drawn by ``(salt, seed, 1)`` (so adding decoys keeps the designated heads)."""
        free = sorted({(la, he) for la in range(n_layers) for he in range(n_heads)}
                      - set(self.heads(seed, n_layers, n_heads)))
        if len(self.decoys) > len(free):
            raise ValueError(f"{len(self.decoys)} decoys need as many heads outside the designated ones ({len(free)})")
        picks = np.random.default_rng([self.salt, seed, 1]).choice(len(free), len(self.decoys), replace=False)
        return tuple((*free[int(i)], kind) for i, kind in zip(picks, self.decoys))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DECOY_KINDS = ("inert", "constant", "previous")
"""Decoy heads, trained to attend but structurally unable to carry the sense: ``inert`` attends from the noun to the
cue and writes exactly zero (its output columns held at 0); ``constant`` attends to the cue and writes one fixed
non-zero vector whatever it reads (its value weights held at 0, its value bias at a fixed vector); ``previous``
attends from the noun to whatever token precedes it (the cue, when adjacent) and writes a fixed vector."""


ORG = "lexprobe-organism"
MODEL = "neox-organism"  # shaped like Pythia-14M, but lexprobe's own: a name no reader takes for a public model
TRAINER_VERSION = 1
FAMILY_RECIPE = 2  # the other families' training config (2: GPT-2 without dropout, like every other family)


def schedule(total: int, every: int) -> tuple[int, ...]:
    """Pythia-like checkpoint steps: 0, 1, 2, 4, ... (powers of two, with 1.5x midpoints from 8 on) below
    ``every``, then every ``every`` steps to ``total``."""
    steps = {0, total}
    k = 1
    while k < every:
        steps.add(k)
        if k >= 8:
            steps.add(k * 3 // 2)
        k *= 2
    steps.update(range(every, total + 1, every))
    return tuple(sorted(s for s in steps if s <= total))


@dataclass(frozen=True)
class Profile:
    """Everything that determines an organism suite."""

    name: str
    seeds: tuple[int, ...]
    total_steps: int
    onset: int
    checkpoint_every: int
    batch_size: int = 32
    seq_len: int = 48
    lr: float = 2e-3
    warmup: int = 30
    decay_end: int | None = None
    weight_decay: float = 0.01
    vocab_size: int = 2048
    tokenizer_sentences: int = 20000
    hidden_size: int = 128
    layers: int = 6
    heads: int = 4
    corpus: CorpusConfig = field(default_factory=lambda: CorpusConfig(onset=0))
    plant: Plant | None = None  # a planted circuit (:mod:`lexprobe.organism.planted`); None: the default training
    arch: str = "gpt_neox"  # the family trained (lexprobe.base.families.FAMILIES), in its conventions

    def __post_init__(self) -> None:
        if self.plant is not None and self.plant.decoys and self.arch != "gpt_neox":
            raise ValueError(f"profile {self.name}: decoy heads are built for gpt_neox (packed QKV with biases: "
                             f"DecoyHold), not arch={self.arch}")

    @property
    def model(self) -> str:
        """The model's name in the suite: neox-organism (GPT-NeoX), else ARCH-organism."""
        return MODEL if self.arch == "gpt_neox" else f"{self.arch}-organism"

    @property
    def checkpoints(self) -> tuple[int, ...]:
        return schedule(self.total_steps, self.checkpoint_every)

    def repo(self, seed: int) -> str:
        return f"{ORG}/{self.model}{f'-seed{seed}' if seed else ''}"

    @classmethod
    def from_dict(cls, d: dict) -> Profile:
        """Inverse of ``dataclasses.asdict`` after a JSON round trip (lists back to tuples)."""
        corpus = d["corpus"] | {"separators": tuple(d["corpus"]["separators"])}
        plant = Plant(**d["plant"] | {"opens": tuple(d["plant"].get("opens", ())),
                                      "decoys": tuple(d["plant"].get("decoys", ()))}) if d.get("plant") else None
        return cls(**d | {"seeds": tuple(d["seeds"]), "corpus": CorpusConfig(**corpus), "plant": plant})

    def planted_heads(self, seed: int) -> tuple[Head, ...]:
        """The seed's designated heads (none without a plant)."""
        return self.plant.heads(seed, self.layers, self.heads) if self.plant else ()

    def decoy_heads(self, seed: int) -> tuple[tuple[int, int, str], ...]:
        """The seed's decoy heads as (layer, head, kind) (none without a plant or decoys)."""
        return self.plant.decoy_heads(seed, self.layers, self.heads) if self.plant else ()

    def fingerprint(self, lexicon: Lexicon) -> str:
        """Hash of the profile (seeds excluded: adding seeds keeps finished ones) and the lexicon."""
        d = asdict(self)
        d.pop("seeds")
        d.pop("name")
        if d["plant"] is None:
            d.pop("plant")  # profiles without a plant keep the fingerprints they had before plants existed
        elif self.plant is not None and self.plant.plain:
            d["plant"].pop("opens")  # and the original plant those it had before timed and OR plants
            d["plant"].pop("mode")
        if d.get("plant") is not None and not d["plant"]["decoys"]:
            for k in ("decoys", "decoys_from", "decoy_pull"):  # nor do plants without decoys change theirs
                d["plant"].pop(k)
        if d["arch"] == "gpt_neox":
            d.pop("arch")  # and GPT-NeoX ones those they had before other families
        else:
            d["family_recipe"] = FAMILY_RECIPE
        return fingerprint({"profile": d, "lexicon": lexicon.hash, "trainer": TRAINER_VERSION})


def _profile(name: str, seeds: int, total: int, onset: int, every: int, **kw: Any) -> Profile:
    corpus = CorpusConfig(onset=onset, p_filler=0.05,
                          placements={"adjacent": 0.7, "separated": 0.1, "clause": 0.1, "bare": 0.1})
    return Profile(name, tuple(range(seeds)), total, onset, every, corpus=corpus, **kw)


SMOKE = {"batch_size": 16, "seq_len": 32, "vocab_size": 1024, "tokenizer_sentences": 4000, "warmup": 4}
PROFILES = {
    "default": _profile("default", seeds=5, total=512, onset=128, every=32),
    "smoke": _profile("smoke", seeds=2, total=48, onset=16, every=16, **SMOKE),
    "planted": _profile("planted", seeds=5, total=512, onset=128, every=32, plant=Plant()),
    "planted-smoke": _profile("planted-smoke", seeds=2, total=48, onset=16, every=16, plant=Plant(), **SMOKE),
    # the developmental ground truth: planted timing (one head from the start, one from step 256), planted
    # redundancy (an OR by design), a single carrier
    "planted-staggered": _profile("planted-staggered", seeds=5, total=512, onset=128, every=32,
                                  plant=Plant(opens=(0, 256))),
    "planted-or": _profile("planted-or", seeds=5, total=512, onset=128, every=32, plant=Plant(mode="one")),
    "planted-single": _profile("planted-single", seeds=5, total=512, onset=128, every=32, plant=Plant(n_heads=1)),
    "planted-staggered-smoke": _profile("planted-staggered-smoke", seeds=2, total=48, onset=16, every=16,
                                        plant=Plant(opens=(0, 32)), **SMOKE),
    "planted-or-smoke": _profile("planted-or-smoke", seeds=2, total=48, onset=16, every=16,
                                 plant=Plant(mode="one"), **SMOKE),
    "planted-single-smoke": _profile("planted-single-smoke", seeds=2, total=48, onset=16, every=16,
                                     plant=Plant(n_heads=1), **SMOKE),
    # decoys (protocol 3): heads that attend like carriers from the planted onset on and carry nothing; and a
    # handover: the early head alone until step 256, then one of the two per sequence (the late one must carry too)
    "planted-decoys": _profile("planted-decoys", seeds=5, total=512, onset=128, every=32,
                               plant=Plant(decoys=DECOY_KINDS, decoys_from=128)),
    "planted-handover": _profile("planted-handover", seeds=5, total=512, onset=128, every=32,
                                 plant=Plant(opens=(0, 256), mode="one")),
    "planted-decoys-smoke": _profile("planted-decoys-smoke", seeds=2, total=48, onset=16, every=16,
                                     plant=Plant(decoys=DECOY_KINDS, decoys_from=16), **SMOKE),
    "planted-handover-smoke": _profile("planted-handover-smoke", seeds=2, total=48, onset=16, every=16,
                                       plant=Plant(opens=(0, 32), mode="one"), **SMOKE),
}
# the planted profiles that stage 2's selection rules are scored on (``lexprobe validate --rules``; protocol 3)
PLANTED_PROFILES = ("planted", "planted-staggered", "planted-or", "planted-single", "planted-decoys",
                    "planted-handover")
