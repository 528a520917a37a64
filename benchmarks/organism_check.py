"""Acceptance check for the organism: training time per profile and the shape of its development curve.

``python benchmarks/organism_check.py [--fresh]`` trains the smoke and default profiles (``--fresh``: from scratch
in a temporary LEXPROBE_HOME, so the times are real; otherwise cached seeds report the time recorded when they were
trained), extracts on the shipped stimuli and prints, per seed of the default profile, on best-layer R^2 (cosine
distance vs same/different sense, all layers, as ``lexprobe analyse`` computes it):

* **flat before the onset**: the largest R^2 at any checkpoint up to the planted onset (<= 0.05);
* **developed**: R^2 at the final checkpoint (>= 0.3);
* **plateau** (reported, not required): the widest stretch [a, b] of consecutive checkpoints after the onset over
  which R^2 varies by less than 10% (max/min - 1 < 0.10 over every checkpoint in the stretch), with its span b/a.
  A plateau of half a decade (b/a >= 10**0.5) would take about 39 minutes of training, so it is not a criterion:
  the training budget is kept;
* training seconds per seed, and the machine's load average (the machine may be shared);
* the detected inflection (onset of the rise, with its interval, and the curve model AICc chose), as a sanity
  check against the planted onset.

It lives among the benchmarks, not in :mod:`lexprobe.organism`: it runs a stage (training needs no stage runner).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lexprobe import Study
from lexprobe.organism.suite import ensure_trained, get_profile, suite_dir

PRE_ONSET_MAX = 0.05
FINAL_MIN = 0.3
PLATEAU_MAX_CHANGE = 0.10  # max/min - 1 of R^2 over the stretch (the plateau is reported, not required)
DEFAULT_BUDGET_S = 600
SMOKE_BUDGET_S = 30


@dataclass(frozen=True)
class Plateau:
    """A stretch [start, end] of consecutive checkpoints whose scores vary by ``change`` = max/min - 1."""

    start: int
    end: int
    change: float
    mean: float

    @property
    def ratio(self) -> float:
        return self.end / self.start


def plateau(steps: np.ndarray, score: np.ndarray, after: int = 0,
            max_change: float = PLATEAU_MAX_CHANGE) -> Plateau | None:
    """The widest (largest end/start) stretch of consecutive checkpoints later than step ``after`` whose scores all lie
    within ``max_change`` of each other (max/min - 1 < max_change); None when no two consecutive checkpoints do."""
    order = np.argsort(steps)
    steps, score = np.asarray(steps)[order], np.asarray(score, float)[order]
    keep = steps > max(after, 0)
    steps, score = steps[keep], score[keep]
    best: Plateau | None = None
    for i in range(len(steps)):
        lo = hi = score[i]
        for j in range(i + 1, len(steps)):
            lo, hi = min(lo, score[j]), max(hi, score[j])
            if not lo > 0 or hi / lo - 1 >= max_change:
                break
            if best is None or steps[j] / steps[i] > best.ratio:
                best = Plateau(int(steps[i]), int(steps[j]), float(hi / lo - 1), float(score[i:j + 1].mean()))
    return best


def curve_summary(best: pd.DataFrame, onset: int, score: str = "r2") -> pd.DataFrame:
    """Per (model, seed): the largest score up to the onset, the final score, the plateau (reported), and whether
    each criterion (flat before the onset, developed at the end) holds."""
    rows = []
    for (model, seed), g in best.groupby(["model", "seed"]):
        g = g.sort_values("step")
        pre = g[g["step"] <= onset]
        worst = pre.loc[pre[score].idxmax()]
        final = g.iloc[-1]
        pl = plateau(g["step"].to_numpy(), g[score].to_numpy(), after=onset)
        rows.append({
            "model": model, "seed": seed, "pre_onset_max": float(worst[score]),
            "pre_onset_max_step": int(worst["step"]),
            "final": float(final[score]), "final_step": int(final["step"]), "final_layer": int(final["best_layer"]),
            "plateau_start": pl.start if pl else np.nan, "plateau_end": pl.end if pl else np.nan,
            "plateau_ratio": pl.ratio if pl else np.nan, "plateau_change": pl.change if pl else np.nan,
            "plateau_mean": pl.mean if pl else np.nan,
            "flat_ok": float(worst[score]) <= PRE_ONSET_MAX, "final_ok": float(final[score]) >= FINAL_MIN,
        })
    return pd.DataFrame(rows)


def _train(profile: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    ensure_trained(profile, progress=True)
    wall = time.perf_counter() - t0
    timings = json.loads((suite_dir(get_profile(profile)) / "timings.json").read_text())
    return wall, timings


def _load() -> str:
    return "load average (1/5/15 min) " + "/".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def check(fresh: bool) -> bool:
    """Print the acceptance numbers; True when every criterion holds."""
    ok = True
    print(_load())
    timings: dict = {}
    for name, budget in (("smoke", SMOKE_BUDGET_S), ("default", DEFAULT_BUDGET_S)):
        wall, timings = _train(name)
        # seeds train side by side: the recorded time is from the first seed's start to the last seed's end
        span = max(t["started"] + t["seconds"] for t in timings.values()) - min(t["started"] for t in timings.values())
        recorded = max(wall, span)  # a fresh call's wall time also counts the tokenizer and process start-up
        p = get_profile(name)
        per_seed = ", ".join(f"{k}: {v['seconds']:.0f}s" for k, v in sorted(timings.items(), key=lambda kv: int(kv[0])))
        passed = recorded <= budget
        ok &= passed
        print(f"[{'PASS' if passed else 'FAIL'}] profile {name}: {len(p.seeds)} seeds x {p.total_steps} steps "
              f"(batch {p.batch_size} x {p.seq_len} tokens, {len(p.checkpoints)} checkpoints) trained in "
              f"{recorded:.0f} s by {max(t['processes'] for t in timings.values())} processes (budget {budget} s; "
              f"this call's wall time {wall:.0f} s{'' if fresh else ', cached seeds report their recorded time'}); "
              f"seconds per seed: {per_seed}; {_load()}")
    s1 = Study("organism", n_boot=0, progress=False).inflection
    onset = s1.onset
    print(f"planted onset: step {onset}; stimuli {s1.stimuli.name}, {len(s1.stimuli.pairs)} pairs; "
          f"score: best-layer R^2 of cosine distance vs same/different sense")
    summary = curve_summary(s1.best, onset)
    inf = s1.inflection.set_index(["model", "seed"])
    for r in summary.itertuples():
        good = r.flat_ok and r.final_ok
        ok &= bool(good)
        span = (f"[{r.plateau_start:.0f}, {r.plateau_end:.0f}] (x{r.plateau_ratio:.2f}, max/min - 1 = "
                f"{100 * r.plateau_change:.1f}%, mean R^2 {r.plateau_mean:.3f})" if np.isfinite(r.plateau_ratio)
                else "none")
        b = inf.loc[(r.model, r.seed)]
        print(f"[{'PASS' if good else 'FAIL'}] seed {r.seed}: max R^2 at steps 0..{onset} = {r.pre_onset_max:.4f} "
              f"(step {r.pre_onset_max_step}; must be <= {PRE_ONSET_MAX}); R^2 at final step {r.final_step} = "
              f"{r.final:.3f} (layer {r.final_layer}; must be >= {FINAL_MIN}); widest plateau {span} "
              f"(max/min - 1 < {100 * PLATEAU_MAX_CHANGE:.0f}%; reported, not required); "
              f"trained in {timings[str(r.seed)]['seconds']:.0f} s; sanity: detected onset "
              f"{b['onset_step']:.0f} [{b['onset_low_step']:.0f}, {b['onset_high_step']:.0f}] ({b['curve_model']})")
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
