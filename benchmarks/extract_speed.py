"""Engine throughput vs a straightforward per-sentence loop, measured side by side on one checkpoint.

Both produce the same ``heads`` and ``distances`` tables for the shipped stimuli on a random pythia-14m-shaped
checkpoint (the script checks they agree). The baseline is :func:`lexprobe.reference.measure_reference`: one HF
forward per sentence with ``output_attentions`` and ``output_hidden_states``, Python loops over layers x heads.

    python benchmarks/extract_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from common import pythia14m_random, stimulus_tokenizer

from lexprobe.extract import ExtractConfig, measure
from lexprobe.reference import measure_reference
from lexprobe.stimuli import load_stimuli


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    stimuli = load_stimuli()
    tok = stimulus_tokenizer(stimuli)
    model = pythia14m_random(0)
    n = len(stimuli.sentences)
    measure(model, tok, stimuli, progress=False)  # warm-up
    t_fast, fast = timed(lambda: measure(model, tok, stimuli, ExtractConfig(batch_size=64), progress=False),
                         args.repeats)
    t_ref, ref = timed(lambda: measure_reference(model, tok, stimuli), 1)
    diff = max(float(np.abs(fast[m].sort_values(list(fast[m].columns[:3])).select_dtypes("number").to_numpy()
                            - ref[m].sort_values(list(ref[m].columns[:3])).select_dtypes("number").to_numpy()).max())
               for m in ("heads", "distances"))
    print(f"checkpoint: random pythia-14m shape; stimuli: {stimuli.name}, {n} sentences, {len(stimuli.pairs)} pairs; "
          f"torch threads: {torch.get_num_threads()}")
    print(f"per-sentence loop : {t_ref:8.3f} s  ({n / t_ref:8.1f} sentences/s)")
    print(f"lexprobe engine   : {t_fast:8.3f} s  ({n / t_fast:8.1f} sentences/s, median of {args.repeats})")
    print(f"max |difference| between the two outputs: {diff:.2e}")
    print(f"speed-up (engine / loop throughput): {t_ref / t_fast:.1f}x  (target >= 20x)")


if __name__ == "__main__":
    main()
