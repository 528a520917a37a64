"""Acceptance check for the organism: training time per profile and disambiguation before/after the onset.

``python -m lexprobe.organism.check [--fresh]`` trains the smoke and default profiles (``--fresh``: from scratch in
a temporary LEXPROBE_HOME, so the times are real; otherwise cached seeds report the time recorded when they were
trained), extracts on the shipped stimuli and prints, per seed, the largest best-layer R^2 (cosine distance vs
same/different sense) at any checkpoint up to the onset and the R^2 at the final checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from lexprobe.organism.suite import ensure_trained, get_profile, suite_dir
from lexprobe.stages import inflection_stage

PRE_ONSET_MAX = 0.05
FINAL_MIN = 0.3
DEFAULT_BUDGET_S = 600
SMOKE_BUDGET_S = 30


def _train(profile: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    ensure_trained(profile, progress=True)
    wall = time.perf_counter() - t0
    timings = json.loads((suite_dir(get_profile(profile)) / "timings.json").read_text())
    return wall, timings


def check(fresh: bool) -> bool:
    """Print the acceptance numbers; True when every criterion holds."""
    ok = True
    for name, budget in (("smoke", SMOKE_BUDGET_S), ("default", DEFAULT_BUDGET_S)):
        wall, timings = _train(name)
        recorded = max(wall, sum(t["seconds"] for t in timings.values()))  # wall includes the tokenizer
        p = get_profile(name)
        per_seed = ", ".join(f"{k}: {v['seconds']:.0f}s" for k, v in sorted(timings.items()))
        passed = recorded <= budget
        ok &= passed
        print(f"[{'PASS' if passed else 'FAIL'}] profile {name}: {len(p.seeds)} seeds x {p.total_steps} steps "
              f"trained in {recorded:.0f} s (budget {budget} s; this call's wall time {wall:.0f} s"
              f"{'' if fresh else ', cached seeds report their recorded time'}); "
              f"per seed: {per_seed}")
    s1 = inflection_stage("organism", n_boot=0, progress=False)
    onset = s1.onset
    print(f"planted onset: step {onset}; stimuli {s1.stimuli.name}, {len(s1.stimuli.pairs)} pairs; "
          f"score: best-layer R^2 of cosine distance vs same/different sense")
    for seed, g in s1.best.groupby("seed"):
        g = g.sort_values("step")
        pre = g[g["step"] <= onset]
        worst = pre.loc[pre["r2"].idxmax()]
        final = g.iloc[-1]
        good = worst["r2"] <= PRE_ONSET_MAX and final["r2"] >= FINAL_MIN
        ok &= bool(good)
        print(f"[{'PASS' if good else 'FAIL'}] seed {seed}: max R^2 at steps 0..{onset} = {worst['r2']:.4f} "
              f"(step {int(worst['step'])}; must be <= {PRE_ONSET_MAX}); R^2 at final step {int(final['step'])} = "
              f"{final['r2']:.3f} (layer {int(final['best_layer'])}, AUC {final['auc']:.3f}; must be >= {FINAL_MIN})")
    print("ALL PASS" if ok else "SOME CRITERIA FAILED")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fresh", action="store_true", help="train from scratch in a temporary LEXPROBE_HOME")
    args = ap.parse_args()
    if args.fresh:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["LEXPROBE_HOME"] = tmp
            raise SystemExit(0 if check(True) else 1)
    raise SystemExit(0 if check(False) else 1)


if __name__ == "__main__":
    main()
