"""Cost of measuring under an intervention vs the intact engine, side by side on one checkpoint.

A random pythia-14m-shaped checkpoint and the shipped stimuli; each intervention runs inside the same single
batched trace as the intact measurement (mean/resample first run intact passes to collect the heads' outputs).
Rounds alternate the conditions so machine noise hits all of them alike; the ratio is the median time under the
intervention over the median intact time (target: at most 1.5x). Layers below an intervention's first edited layer
are taken from one intact pass per batch (kept across conditions, as in a sweep), so a head in a late layer costs
less than the intact measurement.

    python benchmarks/intervention_overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import pythia14m_random, stimulus_tokenizer

from lexprobe.engine.extract import ExtractConfig, measure
from lexprobe.engine.interventions import Compose, EdgeKnockout, HeadAblation, NoOp, QKEdit
from lexprobe.stimuli.tables import load_stimuli

CONDITIONS = {
    "intact": None,
    "no-op": NoOp(),
    "zero, 2 heads": HeadAblation(((2, 0), (2, 1))),
    "mean, 2 heads": HeadAblation(((2, 0), (2, 1)), "mean"),
    "resample, 2 heads": HeadAblation(((2, 0), (2, 1)), "resample"),
    "knockout, every head": EdgeKnockout(None),
    "knockout post, 2 heads": EdgeKnockout(((2, 0), (2, 1)), mode="post"),
    "QK zero, 2 heads": QKEdit(((2, 0), (2, 1))),
    "compose (zero + knockout)": Compose((HeadAblation(((2, 0),)), EdgeKnockout(((3, 1),)))),
    "zero, L0H0 (no layer reused)": HeadAblation(((0, 0),)),
    "zero, L5H0 (layers 0-4 reused)": HeadAblation(((5, 0),)),
    "knockout random, L3H1": EdgeKnockout(((3, 1),), edges="random"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    stimuli = load_stimuli()
    tok = stimulus_tokenizer(stimuli)
    model = pythia14m_random(0)
    cfg = ExtractConfig(save_embeddings=False)
    times: dict[str, list[float]] = {k: [] for k in CONDITIONS}
    for iv in CONDITIONS.values():  # warm-up (and the one-time live check of the sites)
        measure(model, tok, stimuli, cfg, iv, progress=False)
    for _ in range(args.rounds):
        for name, iv in CONDITIONS.items():
            t0 = time.perf_counter()
            measure(model, tok, stimuli, cfg, iv, progress=False)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["intact"])
    print(f"checkpoint: random pythia-14m shape; {len(stimuli.sentences)} sentences; median of {args.rounds} "
          f"alternating rounds; torch threads {torch.get_num_threads()}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:>32}: {med:7.3f} s   {med / base:5.2f}x intact")
    worst = max(statistics.median(ts) for ts in times.values()) / base
    print(f"largest ratio: {worst:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
