"""The open checkpoint suites by name, with their repos, seeds and revision naming as published.

``crfm-gpt2-small`` (and ``-medium``), ``olmo-1b``, ``olmo2-1b``, ``amber``, ``smollm2-135m`` (``-360m``, ``-1.7b``),
each optionally ``:seeds=NAME,NAME`` where a suite has seeds (the CRFM runs: alias, battlestar, caprica, darkmatter,
expanse for small; arwen, beren, celebrimbor, durin, eowyn for medium), and ``hub:ORG/NAME:pattern=PATTERN`` for
any other repo. Revisions are listed offline from a hub cache when it holds the repo and parsed by the suite's
:class:`~lexprobe.checkpoints.revisions.Naming` (steps, and tokens seen where the names give them); names left out
are kept in the suite's metadata with why. Where no cache holds the repo, a suite whose grid is published (the CRFM
runs' 609 checkpoints, OLMo-2-1B's 195 stage-1 checkpoints) uses that grid, its names written by the same Naming;
the others say how to list them.
:func:`resolve_suite` turns any suite spec but the organism's into a suite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lexprobe.checkpoints.hubcache import refs_folder
from lexprobe.checkpoints.revisions import (
    NAMINGS,
    OLMO2_1B_TOKENS_PER_STEP,
    STEP_N,
    Naming,
    crfm_steps,
    naming_of,
    olmo2_1b_steps,
)
from lexprobe.checkpoints.suites import Suite, hub_cache, local_folder, pythia

CRFM_X = (21, 49, 81, 343, 777)  # the runs' seeds, as their repo names give them (x21, ...)


@dataclass(frozen=True)
class Published:
    """A suite as published: its repo (``{seed}``/``{seed_name}`` for seed repos), model name, revision naming,
    family, seeds by name, and its step grid where that is known without listing the hub."""

    repo_template: str
    model: str
    naming: Naming
    model_type: str
    seeds: tuple[tuple[int, str], ...] = ((0, ""),)
    steps: tuple[int, ...] = ()
    config: tuple[tuple[str, object], ...] = ()  # the published config's shape (for ``lexprobe plan``, offline)
    bytes_per_param: int = 4  # as the checkpoints are stored
    tokens_per_step: int = 0  # where the published grid's names give tokens seen (0: they do not)
    grid_from: str = ""  # where the published grid comes from, when the hub's own listing is not it


PUBLISHED: dict[str, Published] = {
    "crfm-gpt2-small": Published("stanford-crfm/{seed_name}-gpt2-small-x{seed}", "gpt2-small", NAMINGS["crfm"],
                                 "gpt2",
                                 tuple(zip(CRFM_X, ("alias", "battlestar", "caprica", "darkmatter", "expanse"))),
                                 crfm_steps(), (("model_type", "gpt2"), ("n_embd", 768), ("n_layer", 12),
                                                ("n_head", 12), ("vocab_size", 50257), ("n_positions", 1024))),
    "crfm-gpt2-medium": Published("stanford-crfm/{seed_name}-gpt2-medium-x{seed}", "gpt2-medium", NAMINGS["crfm"],
                                  "gpt2",
                                  tuple(zip(CRFM_X, ("arwen", "beren", "celebrimbor", "durin", "eowyn"))),
                                  crfm_steps(), (("model_type", "gpt2"), ("n_embd", 1024), ("n_layer", 24),
                                                 ("n_head", 16), ("vocab_size", 50257), ("n_positions", 1024))),
    "olmo-1b": Published("allenai/OLMo-1B-hf", "OLMo-1B-hf", NAMINGS["olmo"], "olmo"),
    "olmo2-1b": Published("allenai/OLMo-2-0425-1B", "OLMo-2-0425-1B", NAMINGS["olmo2"], "olmo2",
                          steps=olmo2_1b_steps(),
                          tokens_per_step=OLMO2_1B_TOKENS_PER_STEP,
                          grid_from="stage-1 checkpoint list allenai/OLMo publishes (OLMo format); the hub branch "
                                    "names are derived from it (tokens rounded up to a billion): list the hub's own "
                                    "branches before downloading",
                          config=(("model_type", "olmo2"), ("hidden_size", 2048), ("num_hidden_layers", 16),
                                  ("num_attention_heads", 16), ("num_key_value_heads", 16),
                                  ("intermediate_size", 8192), ("vocab_size", 100352),
                                  ("max_position_embeddings", 4096))),
    "amber": Published("LLM360/Amber", "Amber", NAMINGS["amber"], "llama"),
    "smollm2-135m": Published("HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints", "SmolLM2-135M",
                              NAMINGS["smollm2"], "llama"),
    "smollm2-360m": Published("HuggingFaceTB/SmolLM2-360M-intermediate-checkpoints", "SmolLM2-360M",
                              NAMINGS["smollm2"], "llama"),
    "smollm2-1.7b": Published("HuggingFaceTB/SmolLM2-1.7B-intermediate-checkpoints", "SmolLM2-1.7B",
                              NAMINGS["smollm2"], "llama"),
}


def cached_revisions(cache_dir: str | None, repo: str) -> list[str] | None:
    """The branch names a hub cache holds for ``repo`` (None when it holds no such repo)."""
    refs = refs_folder(cache_dir, repo)
    return sorted(p.name for p in refs.iterdir() if p.is_file()) if refs.is_dir() else None


def _seeds(p: Published, option: str, spec: str) -> tuple[tuple[int, str], ...]:
    if not option:
        return p.seeds
    key, _, value = option.partition("=")
    by_name = {name: (x, name) for x, name in p.seeds} | {str(x): (x, name) for x, name in p.seeds}
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in wanted if v not in by_name]
    if key != "seeds" or not wanted or unknown:
        raise ValueError(f"suite {spec!r}: use :seeds=NAME,NAME with names from "
                         f"{', '.join(n for _, n in p.seeds if n) or 'none (this suite has one run)'}")
    return tuple(by_name[v] for v in wanted)


def listed(name: str, p: Published, seeds: tuple[tuple[int, str], ...], cache_dir: str | None) -> Suite:
    """A published suite with its revisions listed from a hub cache (or its published grid)."""
    suite = Suite(name, "hub", (p.model,), tuple(s for s, _ in seeds), (), p.repo_template, cache_dir=cache_dir,
                  seed_names=tuple((s, n) for s, n in seeds if n))
    names = [cached_revisions(cache_dir, suite.repo(p.model, s)) for s, _ in seeds]
    meta = {"naming": p.naming.name, "model_type": p.model_type, "config": dict(p.config),
            "bytes_per_param": p.bytes_per_param}
    if any(n is not None for n in names):
        kept, left = p.naming.read(set().union(*(n for n in names if n is not None)))
        tokens = {step: r.tokens for step, r in kept.items() if r.tokens is not None}
        return suite.with_(steps=tuple(kept), revisions=tuple((s, r.name) for s, r in kept.items()), offline=True,
                           metadata={**meta, "left_out": left, "tokens": tokens, "listed_from": "hub cache"})
    if p.steps:
        tokens = {s: s * p.tokens_per_step for s in p.steps} if p.tokens_per_step else {}
        return suite.with_(steps=p.steps, revisions=tuple((s, p.naming.format(s, tokens.get(s))) for s in p.steps),
                           metadata={**meta, "left_out": {}, "tokens": tokens,
                                     "listed_from": p.grid_from or "published grid"})
    raise ValueError(f"suite {name!r}: its revisions ({p.naming.example!r}, ...) are listed only by the hub, and no "
                     f"hub cache at {cache_dir or 'the default location'} holds {suite.repo(p.model, seeds[0][0])}; "
                     f"download some revisions first (huggingface-cli download REPO --revision NAME), or point "
                     "HF_HUB_CACHE (or resolve_suite's cache_dir) at a cache that holds them")


def named_suite(spec: str, cache_dir: str | None = None) -> Suite | None:
    """The suite a published name or a ``hub:ORG/NAME:pattern=REGEX`` spec names (None for any other spec)."""
    name, _, option = spec.partition(":")
    if name in PUBLISHED:
        p = PUBLISHED[name]
        return listed(name, p, _seeds(p, option, spec), cache_dir)
    if spec.startswith("hub:"):
        repo, _, option = spec[4:].partition(":")
        key, _, pattern = option.partition("=")
        if "/" not in repo or (option and key != "pattern"):
            raise ValueError(f"bad suite {spec!r}: use hub:ORG/NAME or hub:ORG/NAME:pattern=PATTERN (a template with "
                             "{step}, or a regex with a 'step' group)")
        p = Published(repo, repo.split("/")[-1], naming_of(pattern) if pattern else STEP_N, "")
        return listed(repo.split("/")[-1], p, p.seeds, cache_dir)
    return None


def suite_specs() -> tuple[str, ...]:
    """Every form of suite spec :func:`resolve_suite` takes, as help texts list them: Pythia's, each published suite by
    name (with its seeds option), any hub repo, a local folder, a hub cache."""
    named = (f"{name}[:seeds={p.seeds[0][1]},...]" if p.seeds[0][1] else name for name, p in PUBLISHED.items())
    return ("pythia-14m", "pythia-70m-deduped", "pythia-14m:seeds=0-9", *named, "hub:ORG/NAME[:pattern=PATTERN]",
            "local:PATH", "hubcache:PATH:ORG/NAME")


def resolve_suite(spec: str, cache_dir: str | None = None) -> Suite:
    """Suite from a CLI spec: ``pythia-14m`` (``pythia-70m-deduped``, ``pythia-14m:seeds=0-9``) | ``local:PATH`` |
    ``hubcache:PATH:ORG/NAME``. The organism's specs are resolved a layer above, by
    :func:`lexprobe.organism.suite.resolve`."""
    if spec.startswith("organism"):
        raise ValueError(f"suite {spec!r}: organism suites are resolved by lexprobe.organism.suite.resolve, not "
                         f"lexprobe.checkpoints.suites")
    if spec.startswith("local:"):
        return local_folder(spec[6:])
    if spec.startswith("hubcache:"):
        path, _, repo = spec[9:].rpartition(":")
        if not path or "/" not in repo:
            raise ValueError(f"bad suite {spec!r}: use hubcache:PATH:ORG/NAME")
        return hub_cache(path, repo, name=repo.split("/")[-1])
    named = named_suite(spec, cache_dir)
    if named is not None:
        return named
    m = re.fullmatch(r"pythia-([\w.]+?)(-deduped)?(?::seeds=(\d+)(?:-(\d+))?)?", spec)
    if m:
        lo = int(m.group(3) or 0)
        hi = int(m.group(4) or lo)
        return pythia((m.group(1),), tuple(range(lo, hi + 1)), deduped=bool(m.group(2)), cache_dir=cache_dir)
    raise ValueError(f"unknown suite {spec!r}: use organism, {', '.join(suite_specs())}")
