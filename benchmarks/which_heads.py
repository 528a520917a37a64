"""Issue 38's acceptance numbers, from the validated planted studies (each validated first, or read from the cache).

    python benchmarks/which_heads.py                       # every planted profile
    python benchmarks/which_heads.py planted-decoys        # some of them

Per profile and seed: the per-head construct check of the carriers (and of the decoys) at the last checkpoint and
across training; the step from which each planted head carries the cue (the handover's two carriers); per method,
precision, recall, decoy false-positive rate and AUROC at a few checkpoints, pooled over seeds; the pair tests'
readings and which planted heads they name.
"""

from __future__ import annotations

import sys

import pandas as pd

from lexprobe import Study
from lexprobe.analysis.detection import ALL_SEEDS, carrier_steps
from lexprobe.analysis.primitives import at_last_checkpoint
from lexprobe.organism.profiles import PLANTED_PROFILES

pd.set_option("display.width", 250)
pd.set_option("display.max_columns", 30)
pd.set_option("display.float_format", "{:.2f}".format)


def show(title: str, table: pd.DataFrame) -> None:
    print(f"\n## {title}\n{table.to_string(index=False)}")


def main(profiles: list[str]) -> None:
    for name in profiles:
        v = Study(suite=f"organism-{name}", progress=False).validation
        print(f"\n# {name}")
        last = at_last_checkpoint(v.per_head)
        show("carriers at the last checkpoint", last[["seed", "step", "layer", "head", "edges_carry",
                                                      "removed_when_cut", "kept_alone", "reading", "certified"]])
        across = v.per_head.pivot_table(index=["seed", "layer", "head"], columns="step", values="certified",
                                        aggfunc="first").astype(float).reset_index()
        show("carriers certified across training (1 = certified)", across)
        show("carrier step per planted head", carrier_steps(v.per_head).drop(columns="model"))
        if len(v.decoys):
            d = v.decoys.groupby(["seed", "layer", "head", "kind"], as_index=False).agg(
                judged=("judged", "sum"), checked=("step", "nunique"),
                max_removed=("removed_when_cut", lambda x: x.abs().max()),
                max_kept=("kept_alone", lambda x: x.abs().max()), certified_empty=("certified_empty", "all"))
            show("decoys across training (largest shares over the judged steps)", d)
        pooled = v.curves[v.curves["seed"].astype(str) == ALL_SEEDS]
        steps = sorted(pooled["step"].unique())
        picks = sorted({steps[0], steps[len(steps) // 3], steps[2 * len(steps) // 3], steps[-1]})
        show("every map at a few checkpoints, pooled over seeds",
             pooled[pooled["step"].isin(picks)][["method", "step", "planted", "found", "true_positives", "decoys",
                                                 "decoys_found", "precision", "recall", "decoy_fpr", "auroc"]])
        show("pair tests at the last checkpoint", v.pairs[["seed", "a", "b", "removed_a", "removed_b",
                                                           "removed_both", "recovered_a", "recovered_b",
                                                           "recovered_both", "reading"]])


if __name__ == "__main__":
    main(sys.argv[1:] or list(PLANTED_PROFILES))
