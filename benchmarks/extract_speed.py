"""Engine throughput against a per-sentence loop and against a bare batched forward, side by side in one run.

Checkpoint: random weights in a Pythia size's exact shape (``--shape``; see :mod:`lexprobe.checkpoints.shapes`).
Stimuli: 336
RAW-C-like sentences (the shipped nouns plus same-length copies, :func:`lexprobe.checkpoints.shapes.rawc_sized`),
tokenized
one token per word and per punctuation mark (:func:`lexprobe.checkpoints.shapes.word_tokenizer`): the lengths Pythia's
own
BPE gives such sentences of common words, since the real tokenizer cannot be fetched offline.

* per-sentence loop: :func:`lexprobe.engine.reference.measure_reference` (one HF forward per sentence with hidden states
  and attentions, Python loops over layers x heads), on the first ``--loop-sentences`` sentences;
* engine: :func:`lexprobe.engine.extract.measure`, everything included (encoding, traces, reductions, tables);
* bare forward: ``model.gpt_neox(input_ids, attention_mask, output_attentions=True)`` on exactly the engine's
  batches, tokenized beforehand (untimed), nothing read out or reduced.

Engine and bare forward alternate ``--repeats`` times. On a shared CPU wall time is inflated by whatever else runs,
so with ``--threads 1`` (the default: all torch work runs in the calling thread) the script also times each run by
the thread's CPU time, which preemption does not inflate. It prints medians of both and the spread of the
per-pair ratios.

    python benchmarks/extract_speed.py --shape 410m [--repeats 3] [--loop-sentences 48]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from common import bare_forward, engine_batches

from lexprobe.checkpoints.shapes import PYTHIA_SHAPES, pythia_config, random_model, rawc_sized, word_tokenizer
from lexprobe.engine.extract import ExtractConfig, measure
from lexprobe.engine.reference import measure_reference
from lexprobe.stimuli.align import encode
from lexprobe.stimuli.tables import load_stimuli


def max_difference(fast: dict, ref: dict) -> float:
    worst = 0.0
    for m, keys in (("heads", ["sentence_id", "layer", "head"]), ("distances", ["pair_id", "layer"])):
        a = fast[m].sort_values(keys).reset_index(drop=True)
        b = ref[m].sort_values(keys).reset_index(drop=True)
        a = a[a[keys[0]].isin(b[keys[0]])].reset_index(drop=True)
        diff = np.abs(a.select_dtypes("number").to_numpy() - b.select_dtypes("number").to_numpy())
        worst = max(worst, float(np.nanmax(diff)))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="14m", choices=tuple(PYTHIA_SHAPES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="sentences per pass (default: the engine's, by memory)")
    ap.add_argument("--loop-sentences", type=int, default=None, help="sentences for the loop (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stimuli = rawc_sized(load_stimuli())
    tok = word_tokenizer(stimuli)
    model = random_model(pythia_config(args.shape), seed=0)
    config = ExtractConfig(batch_size=args.batch_size)
    n = len(stimuli.sentences)

    measure(model, tok, stimuli, config, progress=False)  # warm-up
    batches = engine_batches(model, tok, stimuli, args.batch_size)  # encoded once: the bare forward does no tokenizing
    bare_forward(model, batches)
    runs: dict[str, list[tuple[float, float]]] = {"engine": [], "bare": []}  # (wall, cpu) seconds
    fast = None
    for _ in range(args.repeats):
        for name in runs:
            t0, c0 = time.perf_counter(), time.thread_time()
            if name == "engine":
                fast = measure(model, tok, stimuli, config, progress=False)
            else:
                bare_forward(model, batches)
            runs[name].append((time.perf_counter() - t0, time.thread_time() - c0))

    words = list(dict.fromkeys(stimuli.sentences["word"]))
    per_word = n // len(words)
    k = min(len(words), max(1, (args.loop_sentences or n) // per_word))
    sub = stimuli.subset(words[:k], name="loop")
    t0 = time.perf_counter()
    ref = measure_reference(model, tok, sub)
    t_loop = time.perf_counter() - t0
    n_loop = len(sub.sentences)

    print(f"checkpoint: random pythia-{args.shape} shape; {n} RAW-C-like sentences, mean "
          f"{float(encode(tok, stimuli.sentences).lengths.float().mean()):.1f} tokens; "
          f"{len(batches)} batches of {', '.join(str(len(b.lengths)) for b in batches)} sentences; "
          f"torch threads {torch.get_num_threads()}; {args.repeats} alternating runs each")
    print(f"per-sentence loop : {n_loop / t_loop:9.1f} sentences/s wall  ({n_loop} sentences, {t_loop:.2f} s)")
    med = {name: [statistics.median(t[k] for t in ts) for k in (0, 1)] for name, ts in runs.items()}
    for name, label in (("engine", "lexprobe engine   "), ("bare", "bare forward      ")):
        print(f"{label}: {n / med[name][0]:9.1f} sentences/s wall, {n / med[name][1]:9.1f} per CPU second  "
              f"(walls {', '.join(f'{t[0]:.3f}' for t in runs[name])} s)")
    print(f"max |engine - loop| on the loop's sentences: {max_difference(fast, ref):.2e}")
    print(f"speed-up engine / per-sentence loop (wall): {(n / med['engine'][0]) / (n_loop / t_loop):.1f}x  "
          f"(target >= 5x)")
    for k, what in ((1, "CPU time"), (0, "wall")):
        pair = [e[k] / b[k] for e, b in zip(runs["engine"], runs["bare"])]
        print(f"overhead engine / bare forward ({what}): {med['engine'][k] / med['bare'][k]:.2f}x median  "
              f"(pairs {min(pair):.2f}-{max(pair):.2f}; target <= 1.2x)")


if __name__ == "__main__":
    main()
