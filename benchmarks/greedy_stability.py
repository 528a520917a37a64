"""Does a greedy sufficient set depend on how the sentences are batched? Side by side in one run, per checkpoint.

For each greedy checkpoint of the default study (stage 4's: each seed's onset on, ``redundancy_steps`` of them;
the organism must be trained: ``make run`` first), the greedy search of :func:`lexprobe.stages.patching.greedy_set`
runs with two batch sizes (64 sentences, and the engine's default by memory: float32 results that differ by
rounding) under two tie rules: exact ties only (``TIE = 0``, the rule before ties had a tolerance) and the
tolerance :data:`lexprobe.stages.patching.TIE`. It prints each set and, per rule, how many checkpoints get the same
set under both batch sizes.

    python benchmarks/greedy_stability.py [--seeds 0,1] [--max-steps N]
"""

from __future__ import annotations

import argparse

from lexprobe import Study
from lexprobe.checkpoints.suites import load_checkpoint
from lexprobe.engine.patches import PatchRunner
from lexprobe.stages import patching
from lexprobe.stages.patching import counterfactual_of, greedy_set, greedy_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: all)")
    ap.add_argument("--max-steps", type=int, default=None, help="at most this many greedy checkpoints per seed")
    args = ap.parse_args()
    study = Study(progress=False)
    s1 = study.inflection
    cf = counterfactual_of(s1)
    rules = {"exact ties": 0.0, f"TIE={patching.TIE:g}": patching.TIE}
    same = dict.fromkeys(rules, 0)
    n = 0
    print("seed step | " + " | ".join(f"{r}: batch 64 / by memory" for r in rules))
    for (model, seed), steps in greedy_steps(s1, study.redundancy_steps).items():
        if args.seeds is not None and seed not in {int(s) for s in args.seeds.split(",")}:
            continue
        for step in steps[: args.max_steps]:
            loaded = load_checkpoint(study.checkpoint_suite.checkpoint(model, seed, step))
            heads = [(layer, h) for layer in range(loaded.model.config.num_hidden_layers)
                     for h in range(loaded.model.config.num_attention_heads)]
            runners = [PatchRunner(loaded.model, loaded.tokenizer, s1.stimuli, cf, size) for size in (64, None)]
            cells = []
            for rule, tie in rules.items():
                patching.TIE = tie
                sets = [" ".join(f"L{a}H{b}" for a, b in greedy_set(r, s1.scoring, heads)[1]) for r in runners]
                same[rule] += sets[0] == sets[1]
                cells.append(f"{sets[0]} / {'same' if sets[0] == sets[1] else sets[1]}")
            n += 1
            print(f"{seed:>4} {step:>4} | " + " | ".join(cells), flush=True)
    print(f"\nbatches of the default (by memory) per runner: {[len(b) for b in runners[1].batches]} sentences")
    for rule in rules:
        print(f"{rule}: the same set under both batch sizes at {same[rule]} of {n} checkpoints")


if __name__ == "__main__":
    main()
