"""Stage 4 end to end on a Pythia-shaped suite read through the hub-cache path, with a RAW-C-format stimulus file.

Random weights in pythia-14m's exact layout are saved as branches ``step0``, ``step1``, ``step64`` and ``step512``
of a local hub cache (a ``lexprobe-bench/...`` repo, never ``EleutherAI/...``) and read back offline exactly as Pythia's
``stepN`` revisions are; the stimuli are the shipped pairs written as a CSV in RAW-C's schema (with ratings, so the
target is relatedness as on RAW-C), plus pairs whose cue is not right before the noun, which the ``neutral``
counterfactual cannot neutralise (their sentences are dropped with a counted message). It proves the plumbing: the
counterfactuals on RAW-C-format sentences, the patch maps, the exactness controls, the greedy sets and the QK
edits; with random weights no finding is expected.

    python benchmarks/rawc_pythia_stage4.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from common import stimulus_tokenizer

from lexprobe import Study
from lexprobe.checkpoints.hubcache import add_revision
from lexprobe.checkpoints.shapes import pythia_config, random_model
from lexprobe.checkpoints.suites import hub_cache
from lexprobe.report import view
from lexprobe.stimuli.tables import PAIR_COLUMNS, load_stimuli
from lexprobe.views.text import render_text

REPO = "lexprobe-bench/pythia-14m-random"
FAR = [("bank", "The muddy water slowly reached the bank.", "The savings plan slowly reached the bank.",
        "muddy", "savings"),
       ("bat", "The wooden handle of the bat broke.", "The furry wings of the bat flapped.", "wooden", "furry")]


def rawc_file(path: Path) -> Path:
    """The shipped pairs in RAW-C's schema, with made-up relatedness ratings, plus pairs no counterfactual fits."""
    pairs = load_stimuli("lexprobe_nouns").pairs[PAIR_COLUMNS].copy()
    rng = np.random.default_rng(0)
    pairs["mean_relatedness"] = np.where(pairs["same"], 4.0, 1.5) + rng.normal(0, 0.5, len(pairs))
    far = pd.DataFrame([{"word": w, "sentence1": a, "sentence2": b, "same": False, "ambiguity_type": "Homonymy",
                         "disambiguating_word1": c1, "disambiguating_word2": c2, "Class": "N",
                         "mean_relatedness": 1.2, "string": w} for w, a, b, c1, c2 in FAR])
    out = path / "rawc_format.csv"
    pd.concat([pairs, far], ignore_index=True).to_csv(out, index=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", help="build the cache and store here instead of a temporary folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        csv = rawc_file(root)
        tok = stimulus_tokenizer(load_stimuli(str(csv)))
        for k, step in enumerate((0, 1, 64, 512)):
            add_revision(root / "hub", REPO, f"step{step}", random_model(pythia_config("14m", vocab=len(tok)), k), tok)
        suite = hub_cache(root / "hub", REPO, name="pythia14m-random")
        study = Study(suite, str(csv), root=str(root / "results"), n_random=20, n_random_dev=5, n_boot=50,
                      n_perm=200, progress=False)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            study.causal  # noqa: B018 - stage 4 measured here, under the warnings filter
        print(f"suite {suite.name}: {REPO} steps {suite.steps} read offline from {root / 'hub'}; stimuli {csv.name} "
              f"({len(study.stimulus_set.pairs)} pairs, target {study.inflection.target}); stage 4 in "
              f"{time.perf_counter() - t0:.0f} s")
        for msg in dict.fromkeys(f"{type(w.message).__name__}: {w.message}" for w in caught):
            if "neutral" in msg or "patching" in msg:
                print(msg)
        print(render_text(view(study, "causal")))


if __name__ == "__main__":
    main()
