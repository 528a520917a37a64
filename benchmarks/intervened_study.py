"""Stage 3 of an intervened study beside the intact one: is every number of the intervened study measured on the
intervened model?

    python benchmarks/intervened_study.py          # the default organism (trained or reused), layer 0's heads zeroed
    LEXPROBE_SMOKE=1 python benchmarks/intervened_study.py

For the intact study and ``Study(intervention=HeadAblation(every head of layer 0))`` it prints, per perturbed set,
the median over seeds of the share of the unperturbed best-layer R² kept at the last checkpoint (stage 3's
``r2_retained``), and one perturbed set's R² at seed 0 and the first checkpoint in both studies: where the perturbed
sets are measured on the intervened model the two R² differ; where they were measured on the intact model (the
defect this checks for) they are equal and the share divides one model's score by another's. Stages that refuse the
intervention are listed with why.
"""

from __future__ import annotations

from lexprobe import Study
from lexprobe.engine.interventions import HeadAblation
from lexprobe.stages.registry import Skipped

STAGES = ("inflection", "discovery", "perturbation", "causal", "replication", "validation")


def main() -> None:
    intact = Study(progress=False)
    n_heads = int(intact.discovery.stats["head"].max()) + 1
    intervened = intact.with_(intervention=HeadAblation(tuple((0, h) for h in range(n_heads))))
    print(f"suite {intact.checkpoint_suite.name}; intervention {intervened.intervention.condition}")
    rows = {}
    for label, study in (("intact", intact), ("intervened", intervened)):
        s3 = study.perturbation
        last = s3.retained[s3.retained["step"] == s3.retained["step"].max()]
        rows[label] = (last.groupby("perturbation")["r2_retained"].median(), s3.best)
    print(f"{'perturbed set':24s} {'retained (intact)':>18s} {'retained (intervened)':>22s}")
    for p, kept in rows["intact"][0].items():
        print(f"{p:24s} {kept:18.3f} {rows['intervened'][0].get(p, float('nan')):22.3f}")
    probe = next(p for p in rows["intact"][0].index if p != "intact")
    first = int(rows["intact"][1]["step"].min())
    for label, (_, best) in rows.items():
        r2 = best[(best["perturbation"] == probe) & (best["seed"] == best["seed"].min()) & (best["step"] == first)]
        seed = int(best["seed"].min())
        print(f"{label}: {probe} seed {seed} step {first} best-layer R² {float(r2['r2'].iloc[0]):.6f}")
    for name in STAGES:
        out = intervened.outcome(name)
        print(f"intervened {name}: " + (f"REFUSED/SKIPPED: {out.reason}" if isinstance(out, Skipped) else "ran"))


if __name__ == "__main__":
    main()
