"""The organism as a checkpoint suite: train what is missing, then load it through
:mod:`lexprobe.checkpoints.suites`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lexprobe.base.families import FAMILIES
from lexprobe.base.files import atomic_write
from lexprobe.base.paths import home, smoke
from lexprobe.base.progress import tqdm
from lexprobe.checkpoints.hubcache import has_revision
from lexprobe.checkpoints.named import resolve_suite, suite_specs
from lexprobe.checkpoints.revisions import STEP_N
from lexprobe.checkpoints.shapes import family_config
from lexprobe.checkpoints.suites import Suite
from lexprobe.organism.corpus import Corpus, load_lexicon
from lexprobe.organism.profiles import ORG, PROFILES, Profile

if TYPE_CHECKING:
    from transformers import PretrainedConfig

SEEDS_PER_CORE = 4  # training processes per core at most, by default (each one thread, a few hundred MB)


def get_profile(name: str | None = None) -> Profile:
    """A named profile; ``None`` means ``smoke`` under LEXPROBE_SMOKE=1, else ``default``; under LEXPROBE_SMOKE=1 a
    name with a ``NAME-smoke`` variant (``planted``) means that variant."""
    name = name or ("smoke" if smoke() else "default")
    if smoke() and f"{name}-smoke" in PROFILES:
        name = f"{name}-smoke"
    if name not in PROFILES:
        raise ValueError(f"unknown organism profile {name!r}; choose from {sorted(PROFILES)}")
    return PROFILES[name]


def suite_dir(profile: Profile) -> Path:
    """Cache folder of one profile's suite (keyed by its fingerprint, so a changed profile retrains)."""
    arch = "" if profile.arch == "gpt_neox" else f"{profile.arch}-"
    return home() / "organism" / f"{arch}{profile.name}-{profile.fingerprint(load_lexicon())}"


def suite_name(profile: Profile) -> str:
    """``organism``, ``organism-PROFILE``, with ``-ARCH`` after it for a family other than GPT-NeoX."""
    name = "organism" if profile.name == "default" else f"organism-{profile.name}"
    return name if profile.arch == "gpt_neox" else f"{name}-{profile.arch}"


def plant_metadata(profile: Profile) -> dict[str, Any]:
    """What a suite's metadata records of its profile's plant: the plant and each seed's designated heads as
    ``planted_heads`` {seed (str): [[layer, head], ...]} (nothing for profiles without one); a timed or OR plant
    adds ``planted_opens`` {seed: [[layer, head, opening step], ...]} and ``planted_type``; a plant with decoys
    ``decoy_heads`` {seed: [[layer, head, kind], ...]}."""
    if profile.plant is None:
        return {}
    plant = profile.plant.as_dict()
    if not profile.plant.decoys:  # as plants without decoys always recorded themselves
        plant = {k: v for k, v in plant.items() if k not in ("decoys", "decoys_from", "decoy_pull")}
    meta: dict[str, Any] = {"plant": plant,
                            "planted_heads": {str(s): [list(h) for h in profile.planted_heads(s)]
                                              for s in profile.seeds}}
    if not profile.plant.plain:  # timed or OR plants: when each head opens, and how the heads share the cue
        opens = profile.plant.opens or (0,) * profile.plant.n_heads
        meta["planted_opens"] = {str(s): [[*h, o] for h, o in zip(profile.planted_heads(s), opens)]
                                 for s in profile.seeds}
        meta["planted_type"] = "OR (one designated head open per sequence)" if profile.plant.mode == "one" \
            else "joint (every open designated head open in every sequence)"
    if profile.plant.decoys:
        meta["decoy_heads"] = {str(s): [list(h) for h in profile.decoy_heads(s)] for s in profile.seeds}
    return meta


def _written(root: Path, profile: Profile, seed: int) -> int:
    """How many of the seed's checkpoints are in the cache."""
    return sum(has_revision(root / "hub", profile.repo(seed), STEP_N.format(s)) for s in profile.checkpoints)


def _seed_done(root: Path, profile: Profile, seed: int) -> bool:
    return _written(root, profile, seed) == len(profile.checkpoints)


def _train_here(p: Profile, seeds: list[int], corpus: Corpus, root: Path, progress: bool) -> Iterator[tuple[int, dict]]:
    """Train seeds one after the other in this process, yielding each seed's timing record."""
    from lexprobe.organism.train import build_tokenizer, train_seed  # torch and transformers only when training

    tok = build_tokenizer(p, corpus)
    for seed in tqdm(seeds, desc=f"organism {p.name}: seeds", disable=not progress):
        started = time.time()
        train_seed(p, seed, corpus, tok, root / "hub", root, progress)
        yield seed, {"seconds": time.time() - started, "started": started, "processes": 1}


def _train_parallel(p: Profile, todo: list[int], root: Path, workers: int,
                    progress: bool) -> Iterator[tuple[int, dict]]:
    """Train seeds in up to ``workers`` processes (``python -m lexprobe.organism.worker``, one thread each),
    yielding each seed's timing record (wall time of its process) as it finishes; the progress bar counts
    checkpoints written. A failed process, or an interrupt, stops them all (finished checkpoints and resume states
    stay on disk, so the next call resumes); a process's output goes to ``ROOT/train-seed<k>.log``."""
    atomic_write(root / "profile.json", json.dumps(asdict(p)).encode())
    # the workers import the same lexprobe as this process, wherever it was imported from
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        *filter(None, [os.environ.get("PYTHONPATH")])])}
    waiting = list(todo)
    running: dict[int, tuple[subprocess.Popen[bytes], float]] = {}  # seed -> (its process, when it started)
    total = len(todo) * len(p.checkpoints)
    bar = tqdm(total=total, desc=f"organism {p.name}: {len(todo)} seeds x {len(p.checkpoints)} checkpoints, "
                                 f"{workers} processes", disable=not progress)
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                seed = waiting.pop(0)
                with open(root / f"train-seed{seed}.log", "wb") as log:
                    proc = subprocess.Popen([sys.executable, "-m", "lexprobe.organism.worker", str(root), str(seed)],
                                            stdout=log, stderr=subprocess.STDOUT, env=env)
                running[seed] = (proc, time.time())
            time.sleep(0.5)
            bar.update(sum(_written(root, p, s) for s in todo) - bar.n)
            for seed, (proc, started) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[seed]
                if proc.returncode != 0:
                    tail = (root / f"train-seed{seed}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"organism {p.name}: training seed {seed} failed (exit code "
                                       f"{proc.returncode}); end of {root / f'train-seed{seed}.log'}:\n{tail}")
                yield seed, {"seconds": time.time() - started, "started": started, "processes": workers}
    finally:
        for proc, _ in running.values():
            proc.terminate()
            proc.wait()
        bar.close()


def ensure_trained(profile: str | Profile | None = None, progress: bool = True, workers: int | None = None) -> Suite:
    """Train every seed of the profile whose checkpoints are not all cached, and return the suite.

    Seeds train in parallel processes, ``workers`` at a time (default: every seed at once, up to
    ``SEEDS_PER_CORE`` per CPU core: time-sliced processes keep every core busy to the end, where one process per
    core leaves the last seed training alone when the seeds do not divide evenly, e.g. 5 seeds on 2 cores take 2.5
    seed-times instead of 3); every seed trains on one thread, so its weights do not depend on the number of workers
    or cores."""
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    lexicon = load_lexicon()
    root = suite_dir(p)
    todo = [s for s in p.seeds if not _seed_done(root, p, s)]
    if todo:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        root.mkdir(parents=True, exist_ok=True)
        corpus = Corpus(lexicon, p.corpus)
        timings = json.loads((root / "timings.json").read_text()) if (root / "timings.json").is_file() else {}
        n = min(len(todo), workers or SEEDS_PER_CORE * len(os.sched_getaffinity(0)))
        finished = (_train_parallel(p, todo, root, n, progress) if n > 1
                    else _train_here(p, todo, corpus, root, progress))
        for seed, record in finished:
            timings[str(seed)] = record
            atomic_write(root / "timings.json", json.dumps(timings, indent=1).encode())
        meta = {"profile": p.name, "fingerprint": p.fingerprint(lexicon), "onset": p.onset, "seeds": list(p.seeds),
                "steps": list(p.checkpoints), "lexicon_hash": lexicon.hash, "corpus": p.corpus.as_dict(),
                **plant_metadata(p)}
        atomic_write(root / "suite.json", json.dumps(meta, indent=1).encode())
    return organism_suite(p)


def organism_suite(profile: str | Profile | None = None, trained: bool = True) -> Suite:
    """The (already trained) organism suite, read offline from its hub cache; ``trained=False``: the suite as it
    will be once trained (names, seeds, steps; for ``lexprobe plan``), trained or not."""
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    root = suite_dir(p)
    missing = [s for s in p.seeds if not _seed_done(root, p, s)]
    if missing and trained:
        raise FileNotFoundError(f"organism profile {p.name!r} is not trained for seeds {missing} (in {root}); "
                                f"run `lexprobe organism train --profile {p.name}`")
    meta = {"fingerprint": p.fingerprint(load_lexicon()), "onset": p.onset, "profile": p.name,
            "corpus": p.corpus.as_dict(), **plant_metadata(p)}
    return Suite(suite_name(p), "hub", (p.model,), p.seeds, p.checkpoints, f"{ORG}/{{model}}{{seed_suffix}}",
                 cache_dir=str(root / "hub"), offline=True, metadata=meta)


def is_trained(profile: Profile) -> bool:
    """Whether every seed of the profile's suite is in the cache."""
    return all(_seed_done(suite_dir(profile), profile, s) for s in profile.seeds)


def organism_shape(profile: Profile) -> PretrainedConfig:
    """The model config a profile trains (its tokenizer's vocabulary taken at the profile's size, an upper bound):
    what ``lexprobe plan`` costs before the organism exists."""
    return family_config(profile.arch, profile.vocab_size, profile.hidden_size, profile.layers, profile.heads)


def organism_profile(spec: str) -> Profile | None:
    """The profile an ``organism`` / ``organism-PROFILE`` spec names, optionally in another family and with more
    seeds (``organism:arch=gpt2``, ``organism-planted:arch=llama``, ``organism-planted:seeds=10``: seeds 0-9, the
    first ones reused; LEXPROBE_SMOKE=1: its smoke variant), or None for a spec that names no organism."""
    name, _, options = spec.partition(":")
    if name != "organism" and not name.startswith("organism-"):
        return None
    profile = get_profile(name.partition("-")[2] or None)
    for option in filter(None, options.split(":")):
        key, _, value = option.partition("=")
        if key == "arch" and value in FAMILIES:
            profile = replace(profile, arch=value)
        elif key == "seeds" and value.isdigit() and int(value) > 0:
            profile = replace(profile, seeds=tuple(range(int(value))))
        else:
            raise ValueError(f"bad organism spec {spec!r}: use {name}:arch=ARCH with ARCH one of "
                             f"{', '.join(FAMILIES)}, and/or :seeds=N (seeds 0..N-1)")
    return profile


def suite_help() -> str:
    """The suite specs :func:`resolve` takes, for help texts (the study's ``suite`` setting, ``--suite``): the
    organism's, then every one :func:`lexprobe.checkpoints.named.suite_specs` lists, each named suite included."""
    return " | ".join(("organism[-PROFILE][:arch=ARCH][:seeds=N]", *suite_specs()))


def resolve(spec: str, cache_dir: str | None = None) -> Suite:
    """The suite a spec names, as the command line and notebooks write it: an organism spec
    (:func:`organism_profile`) trains what is missing first; anything else goes to
    :func:`lexprobe.checkpoints.named.resolve_suite` (Pythia, local folders, hub caches). It lives here, above both,
    so that ``checkpoints`` never imports the organism."""
    profile = organism_profile(spec)
    return resolve_suite(spec, cache_dir) if profile is None else ensure_trained(profile)


def planned(spec: str, cache_dir: str | None = None) -> tuple[Suite, PretrainedConfig | None]:
    """The suite a spec names without training anything, and the model config to plan it from when its checkpoints
    are not there yet (an organism not trained yet: its profile's shape); None when they are."""
    profile = organism_profile(spec)
    if profile is None:
        return resolve_suite(spec, cache_dir), None
    return organism_suite(profile, trained=False), None if is_trained(profile) else organism_shape(profile)
