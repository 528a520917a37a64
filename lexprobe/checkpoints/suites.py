"""Checkpoint suites: which (model, seed, step) checkpoints exist and how to load one at a time.

A :class:`Suite` is either ``hub`` (a Hugging Face repo per model/seed with ``stepN`` revisions, online or from a
local hub cache, which is also how the offline organism is stored) or ``local`` (a folder of ``stepN/``
HF model folders). Loading forces eager attention, validates the instrument (attention rows sum to 1, causal),
records the resolved commit, and raises :class:`CheckpointUnavailable` for a missing or corrupt revision so
sweeps can skip it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lexprobe.base.families import ENCODERS, FAMILIES
from lexprobe.checkpoints.hubcache import read_ref, refs_folder, snapshots_folder
from lexprobe.checkpoints.revisions import STEP_N
from lexprobe.checkpoints.shapes import PYTHIA_SHAPES

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers import PreTrainedTokenizerBase as Tokenizer  # every checkpoint's tokenizer

log = logging.getLogger(__name__)

PYTHIA_SIZES = tuple(PYTHIA_SHAPES)  # the sizes whose shapes lexprobe.checkpoints.shapes knows: all of Pythia's
PYTHIA_SEED_SIZES = ("14m", "31m", "70m", "160m", "410m")
PYTHIA_DEDUPED_SIZES = ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
PYTHIA_STEPS: tuple[int, ...] = (0, *(2**i for i in range(10)), *range(1000, 143001, 1000))
RIVTROTT_STEPS: tuple[int, ...] = (
    0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 5000, 10000, 25000, 50000, 75000, 100000, 143000,
)


class CheckpointUnavailable(RuntimeError):
    """A checkpoint could not be loaded or failed validation (missing revision, corrupt weights, ...)."""


def log_subset(steps: tuple[int, ...] | list[int], n: int) -> tuple[int, ...]:
    """About ``n`` steps spaced evenly in log10(step+1), keeping the first and last; ``n = 1``: the last alone (the
    most trained checkpoint, where a single-checkpoint analysis belongs); ``n = 0``: none."""
    steps = sorted(set(steps))
    if n >= len(steps):
        return tuple(steps)
    if n == 1:
        return (steps[-1],)
    targets = np.linspace(np.log10(steps[0] + 1), np.log10(steps[-1] + 1), n)
    logs = np.log10(np.asarray(steps) + 1)
    chosen = {steps[int(np.argmin(np.abs(logs - t)))] for t in targets}
    return tuple(sorted(chosen))


def parse_steps(spec: str, available: tuple[int, ...]) -> tuple[int, ...]:
    """Steps from a CLI spec: ``all``, ``rivtrott`` (the original 20-step grid), ``log:N``, ``last``,
    ``first:N``, or a comma list ``0,1,512``. Steps not in the suite raise a ValueError naming them."""
    spec = spec.strip()
    if spec == "all":
        return tuple(available)
    if spec == "last":
        return (max(available),)
    if spec == "rivtrott":
        wanted = RIVTROTT_STEPS
    elif spec.startswith(("log:", "first:")):
        head, _, n = spec.partition(":")
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"bad --steps {spec!r}: {head}:N needs a whole number N >= 1")
        return log_subset(available, int(n)) if head == "log" else tuple(sorted(available)[: int(n)])
    else:
        try:
            wanted = tuple(int(s) for s in spec.split(",") if s.strip())
        except ValueError as err:
            raise ValueError(f"bad --steps {spec!r}: use all, rivtrott, last, log:N, first:N or 0,1,512") from err
    bad = [s for s in wanted if s not in available]
    if bad:
        raise ValueError(f"steps {bad} are not in this suite (it has {len(available)} steps: "
                         f"{list(available)[:6]} ... {list(available)[-3:]})")
    return tuple(wanted)


@dataclass(frozen=True)
class Checkpoint:
    """One model checkpoint: where it lives and which (suite, model, seed, step) it is."""

    suite: str
    model: str
    seed: int
    step: int
    repo: str | None = None
    revision: str | None = None
    path: str | None = None
    cache_dir: str | None = None
    offline: bool = False

    @property
    def label(self) -> str:
        return f"{self.suite}/{self.model}/seed{self.seed}/step{self.step}"


@dataclass(frozen=True)
class Suite:
    """A family of checkpoints over models (sizes), seeds and training steps."""

    name: str
    kind: Literal["hub", "local"]
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: tuple[int, ...]
    repo_template: str = "EleutherAI/pythia-{model}{seed_suffix}"
    cache_dir: str | None = None
    offline: bool = False
    root: str | None = None
    path_template: str = "step{step}"
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    revisions: tuple[tuple[int, str], ...] = ()  # (step, branch name) where a suite does not name them stepN
    seed_names: tuple[tuple[int, str], ...] = ()  # (seed, name) where repos name their seeds (``{seed_name}``)

    def repo(self, model: str, seed: int) -> str:
        """Hub repo id of one model/seed (seed 0 is the unsuffixed original)."""
        return self.repo_template.format(model=model, seed=seed, seed_suffix=f"-seed{seed}" if seed else "",
                                         seed_name=dict(self.seed_names).get(seed, ""))

    def revision(self, step: int) -> str:
        """The branch name of a step: as the suite published it, else ``stepN``."""
        return dict(self.revisions).get(step, STEP_N.format(step))

    def checkpoint(self, model: str, seed: int, step: int) -> Checkpoint:
        seed, step = int(seed), int(step)
        if self.kind == "hub":
            return Checkpoint(self.name, model, seed, step, repo=self.repo(model, seed), revision=self.revision(step),
                              cache_dir=self.cache_dir, offline=self.offline)
        path = Path(self.root or ".") / self.path_template.format(model=model, seed=seed, step=step)
        return Checkpoint(self.name, model, seed, step, path=str(path))

    def checkpoints(self, steps: tuple[int, ...] | None = None, models: tuple[str, ...] | None = None,
                    seeds: tuple[int, ...] | None = None) -> list[Checkpoint]:
        """All checkpoints, model-major then seed then step."""
        pick_models = self.models if models is None else models
        pick_seeds = self.seeds if seeds is None else seeds
        pick_steps = self.steps if steps is None else steps
        return [self.checkpoint(m, s, t) for m in pick_models for s in pick_seeds for t in pick_steps]

    def identity(self) -> dict[str, Any]:
        """What makes this suite's checkpoints these checkpoints (goes into result fingerprints): a suite's own
        fingerprint (the organism's training fingerprint) when it has one, else where its checkpoints live."""
        if "fingerprint" in self.metadata:
            return {"fingerprint": self.metadata["fingerprint"]}
        return {"kind": self.kind, "root": self.root, "cache_dir": self.cache_dir, "repo_template": self.repo_template}

    def with_(self, **changes: Any) -> Suite:
        """A copy with some fields changed (e.g. a step subset)."""
        return replace(self, **changes)


def pythia(models: tuple[str, ...] = ("14m",), seeds: tuple[int, ...] = (0,), steps: tuple[int, ...] = PYTHIA_STEPS,
           deduped: bool = False, cache_dir: str | None = None, offline: bool = False) -> Suite:
    """The Pythia suite (EleutherAI), optionally deduped or PolyPythia seeds 1-9, loaded from the hub."""
    for m in models:
        allowed = PYTHIA_DEDUPED_SIZES if deduped else PYTHIA_SIZES
        if m not in allowed:
            raise ValueError(f"unknown Pythia size {m!r}{' (deduped)' if deduped else ''}; choose from {allowed}")
        if any(seeds) and deduped:
            raise ValueError(f"there are no deduped seed repos: pythia-{m}-deduped exists only as the original run "
                             f"(seed 0), not seeds {[s for s in seeds if s]}; use pythia-{m}-deduped without seeds, "
                             f"or pythia-{m}:seeds=... for the PolyPythia seeds")
        if any(seeds) and m not in PYTHIA_SEED_SIZES:
            raise ValueError(f"extra seeds exist only for sizes {PYTHIA_SEED_SIZES}, not {m!r}")
    bad = [s for s in seeds if not 0 <= s <= 9]
    if bad:
        raise ValueError(f"Pythia seeds are 0 (original) and 1-9, not {bad}")
    template = "EleutherAI/pythia-{model}-deduped" if deduped else "EleutherAI/pythia-{model}{seed_suffix}"
    return Suite("pythia-deduped" if deduped else "pythia", "hub", tuple(models), tuple(seeds), tuple(steps),
                 repo_template=template, cache_dir=cache_dir, offline=offline)


def local_folder(root: str | Path, name: str | None = None) -> Suite:
    """A folder of ``stepN/`` HF model folders (one model, one seed)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"local suite folder {root} does not exist")
    steps = sorted(r.step for p in root.iterdir() if p.is_dir() and (r := STEP_N.parse(p.name)))
    if not steps:
        raise FileNotFoundError(f"{root} contains no stepN/ folders")
    return Suite(name or root.name, "local", ("local",), (0,), tuple(steps), root=str(root))


def hub_cache_steps(cache_dir: str | Path, repo: str) -> tuple[int, ...]:
    """The ``stepN`` refs a hub cache holds for ``repo``."""
    refs = refs_folder(cache_dir, repo)
    if not refs.is_dir():
        raise FileNotFoundError(f"hub cache {cache_dir} has no repo {repo} (looked for {refs})")
    return tuple(sorted(r.step for p in refs.iterdir() if (r := STEP_N.parse(p.name))))


def hub_cache(cache_dir: str | Path, repo_template: str, models: tuple[str, ...] | None = None,
              seeds: tuple[int, ...] = (0,), name: str | None = None, metadata: dict[str, Any] | None = None) -> Suite:
    """A suite read offline from a hub cache (``models--ORG--NAME/refs/stepN``), steps taken from the cache.

    For a plain repo id (no ``{model}`` placeholder) the model is named after the repo."""
    models = models or (repo_template.rsplit("/", 1)[-1],)
    suite = Suite(name or repo_template.split("/")[0], "hub", tuple(models), tuple(seeds), (), repo_template,
                  cache_dir=str(cache_dir), offline=True, metadata=metadata or {})
    steps = sorted(set().union(*(hub_cache_steps(cache_dir, suite.repo(m, s)) for m in models for s in seeds)))
    return suite.with_(steps=tuple(steps))


@dataclass
class Loaded:
    """A loaded, validated checkpoint."""

    checkpoint: Checkpoint
    model: PreTrainedModel
    tokenizer: Tokenizer
    commit: str
    weights_hash: str

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.config.num_attention_heads)


def weights_hash(model: torch.nn.Module) -> str:
    """Cheap fingerprint of the weights (first 4096 values of every tensor) to spot identical checkpoints."""
    import torch  # here, not at the top: naming and finding checkpoints needs no torch

    h = hashlib.sha1()
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().reshape(-1)[:4096].to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


ROW_SUM_TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}
"""How far an attention row may sum from 1 per weight dtype (by name): the softmax runs in float32 and is rounded to the
weight dtype (bfloat16 keeps 8 mantissa bits: each probability is off by up to 2**-9 of itself)."""


def validate_model(model: PreTrainedModel, where: str) -> None:
    """Fail loudly unless the model returns per-layer attention whose rows sum to 1 and that is causal."""
    import torch

    cfg = model.config
    weight = next(model.parameters())
    if cfg.model_type not in FAMILIES:
        kind = "an encoder (lexprobe needs a causal model)" if getattr(cfg, "is_encoder_decoder", False) or \
            cfg.model_type in ENCODERS else "not a family lexprobe measures"
        raise CheckpointUnavailable(f"{where}: model_type {cfg.model_type!r} is {kind}; lexprobe measures "
                                    f"{', '.join(FAMILIES)}")
    ids = (torch.arange(1, 9, device=weight.device) * 7919 % min(cfg.vocab_size, 50000)).unsqueeze(0)
    with torch.inference_mode():
        out = model(input_ids=ids, output_attentions=True)
    atts = out.attentions
    if not atts or len(atts) != cfg.num_hidden_layers:
        raise CheckpointUnavailable(f"{where}: model returned {len(atts or ())} attention maps for "
                                    f"{cfg.num_hidden_layers} layers; attention must be eager")
    for i, a in enumerate(atts):
        if not torch.isfinite(a).all():
            raise CheckpointUnavailable(f"{where}: non-finite attention in layer {i} (corrupt weights?)")
        if (a.float().sum(-1) - 1).abs().max() > ROW_SUM_TOLERANCE[dtype_name(weight.dtype)]:
            raise CheckpointUnavailable(f"{where}: attention rows of layer {i} do not sum to 1")
        if torch.triu(a[0], diagonal=1).abs().max() > 1e-6:
            raise CheckpointUnavailable(f"{where}: attention of layer {i} is not causal")


def _load(ck: Checkpoint, dtype: torch.dtype) -> tuple[PreTrainedModel, Tokenizer, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if ck.path is not None:
        src, kw = ck.path, {}
        if not Path(src).is_dir():
            raise CheckpointUnavailable(f"{ck.label}: folder {src} does not exist")
    else:
        assert ck.repo is not None  # a checkpoint without a folder is a hub revision
        src, kw = ck.repo, {"revision": ck.revision, "cache_dir": ck.cache_dir, "local_files_only": ck.offline}
    try:
        model = AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager", dtype=dtype, **kw)
        tok = AutoTokenizer.from_pretrained(src, **kw)
    except Exception as err:  # missing revision, missing/corrupt files: all mean "skip this checkpoint"
        raise CheckpointUnavailable(f"{ck.label}: could not load ({type(err).__name__}: {err})") from err
    commit = _folder_commit(Path(src)) if ck.path else (cached_commit(ck) or "unknown")
    return model.eval(), tok, commit


def _source(ck: Checkpoint) -> tuple[str, dict[str, Any]]:
    """Where ``from_pretrained`` finds a checkpoint's files: its folder, or its hub repo with the revision."""
    if ck.path is not None:
        return ck.path, {}
    assert ck.repo is not None  # a checkpoint without a folder is a hub revision
    return ck.repo, {"revision": ck.revision, "cache_dir": ck.cache_dir, "local_files_only": ck.offline}


def load_config(ck: Checkpoint) -> PretrainedConfig:
    """The model config of one checkpoint (its ``config.json``), without loading its weights."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(_source(ck)[0], **_source(ck)[1])
    except Exception as err:  # noqa: BLE001 - reported as an unavailable checkpoint, like a failed model load
        raise CheckpointUnavailable(f"{ck.label}: could not read its config ({type(err).__name__}: {err})") from err


def load_tokenizer(ck: Checkpoint) -> Tokenizer:
    """The tokenizer of one checkpoint, without loading its weights."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(_source(ck)[0], **_source(ck)[1])
    except Exception as err:  # noqa: BLE001 - reported as an unavailable checkpoint, like a failed model load
        raise CheckpointUnavailable(f"{ck.label}: could not load its tokenizer ({type(err).__name__}: {err})") from err


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


def tokenizer_identity(ck: Checkpoint) -> str | None:
    """Hash of the checkpoint's tokenizer files as they lie on this machine (its folder, or its hub snapshot), read
    without loading the tokenizer; None when none is on disk (a hub revision not downloaded yet)."""
    if ck.path is not None:
        folder = Path(ck.path)
    else:
        commit = cached_commit(ck)
        if commit is None or ck.repo is None:
            return None
        folder = snapshots_folder(ck.cache_dir, ck.repo) / commit
    files = [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def cached_commit(ck: Checkpoint) -> str | None:
    """The commit a hub revision points to in the local cache's ``refs/`` (where a download puts it), read
    without loading the model; None if unknown."""
    if ck.repo is None:
        return None
    if ck.revision and re.fullmatch(r"[0-9a-f]{40}", ck.revision):
        return ck.revision
    return read_ref(ck.cache_dir, ck.repo, str(ck.revision))


def _folder_commit(path: Path) -> str:
    """Content hash of a local folder's weight files, standing in for a commit."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(f.read_bytes())
    return "local-" + h.hexdigest()[:16]


def dtype_name(dtype: torch.dtype) -> str:
    """``float32`` for ``torch.float32``."""
    return str(dtype).removeprefix("torch.")


def load_checkpoint(ck: Checkpoint, dtype: torch.dtype | None = None, device: str = "cpu") -> Loaded:
    """Load and validate one checkpoint (eager attention, eval mode) in ``dtype`` (default float32) on ``device``."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    if dtype_name(dtype) not in ROW_SUM_TOLERANCE:
        raise ValueError(f"unsupported dtype {dtype}; use one of {sorted(ROW_SUM_TOLERANCE)}")
    model, tok, commit = _load(ck, dtype)
    # transformers types PreTrainedModel.to as a functools.wraps wrapper, which mypy does not bind to the instance
    model = model.to(device)  # type: ignore[arg-type]
    validate_model(model, ck.label)
    return Loaded(ck, model, tok, commit, weights_hash(model))


def suite_metadata(suite: Suite) -> dict[str, Any]:
    """JSON-able description of a suite for sidecars."""
    return {"name": suite.name, "kind": suite.kind, "repo_template": suite.repo_template, "root": suite.root,
            "cache_dir": suite.cache_dir, "metadata": json.loads(json.dumps(suite.metadata, default=str))}
