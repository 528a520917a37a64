"""The organism as a checkpoint suite: train what is missing, then load it through :mod:`lexprobe.suites`."""

from __future__ import annotations

import json
import time
from pathlib import Path


from lexprobe.hubcache import has_revision
from lexprobe.organism.corpus import Corpus, load_lexicon
from lexprobe.organism.train import MODEL, ORG, PROFILES, Profile, build_tokenizer, train_seed
from lexprobe.paths import home, smoke
from lexprobe.progress import tqdm
from lexprobe.store import atomic_write
from lexprobe.suites import Suite, hub_cache


def get_profile(name: str | None = None) -> Profile:
    """A named profile; ``None`` means ``smoke`` under LEXPROBE_SMOKE=1, else ``default``."""
    name = name or ("smoke" if smoke() else "default")
    if name not in PROFILES:
        raise ValueError(f"unknown organism profile {name!r}; choose from {sorted(PROFILES)}")
    return PROFILES[name]


def suite_dir(profile: Profile) -> Path:
    """Cache folder of one profile's suite (keyed by its fingerprint, so a changed profile retrains)."""
    return home() / "organism" / f"{profile.name}-{profile.fingerprint(load_lexicon())}"


def suite_name(profile: Profile) -> str:
    return "organism" if profile.name == "default" else f"organism-{profile.name}"


def _seed_done(root: Path, profile: Profile, seed: int) -> bool:
    cache = root / "hub"
    return all(has_revision(cache, profile.repo(seed), f"step{s}") for s in profile.checkpoints)


def ensure_trained(profile: str | Profile | None = None, progress: bool = True) -> Suite:
    """Train every seed of the profile whose checkpoints are not all cached, and return the suite."""
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    lexicon = load_lexicon()
    root = suite_dir(p)
    todo = [s for s in p.seeds if not _seed_done(root, p, s)]
    if todo:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        root.mkdir(parents=True, exist_ok=True)
        corpus = Corpus(lexicon, p.corpus)
        tok = build_tokenizer(p, corpus)
        timings = json.loads((root / "timings.json").read_text()) if (root / "timings.json").is_file() else {}
        for seed in tqdm(todo, desc=f"organism {p.name}: seeds", disable=not progress):
            t0 = time.perf_counter()
            losses = train_seed(p, seed, corpus, tok, root / "hub", root, progress)
            timings[str(seed)] = {"seconds": time.perf_counter() - t0, "final_loss": losses[-1] if losses else None}
            atomic_write(root / "timings.json", json.dumps(timings, indent=1).encode())
        meta = {"profile": p.name, "fingerprint": p.fingerprint(lexicon), "onset": p.onset, "seeds": list(p.seeds),
                "steps": list(p.checkpoints), "lexicon_hash": lexicon.hash, "corpus": p.corpus.as_dict()}
        atomic_write(root / "suite.json", json.dumps(meta, indent=1).encode())
    return organism_suite(p)


def organism_suite(profile: str | Profile | None = None) -> Suite:
    """The (already trained) organism suite, read offline from its hub cache."""
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    root = suite_dir(p)
    missing = [s for s in p.seeds if not _seed_done(root, p, s)]
    if missing:
        raise FileNotFoundError(f"organism profile {p.name!r} is not trained for seeds {missing} (in {root}); "
                                f"run `lexprobe organism train --profile {p.name}`")
    meta = {"fingerprint": p.fingerprint(load_lexicon()), "onset": p.onset, "profile": p.name,
            "corpus": p.corpus.as_dict()}
    suite = hub_cache(root / "hub", f"{ORG}/{{model}}{{seed_suffix}}", models=(MODEL,), seeds=p.seeds,
                      name=suite_name(p), metadata=meta)
    return suite.with_(steps=p.checkpoints)
