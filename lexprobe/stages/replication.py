"""Stage 5 runner and report: do the stage 1, 2 and 4 findings replicate across training seeds?

It takes finished earlier stages (their tables are cached in the results store) and compares seeds with
:mod:`lexprobe.analysis.agreement`: inflection agreement, a piecewise mixed model with seed random effects, head
agreement against within-layer and anywhere permutation nulls, and the stage-4 ablation effect per seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lexprobe.analysis import agreement as seeds
from lexprobe.stages.causal import Causal
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection


@dataclass
class Replication:
    """Seed replication tables (see :mod:`lexprobe.analysis.agreement`); ``causal*`` are None without stage 4."""

    inflection: pd.DataFrame
    spread: pd.DataFrame
    mixed: seeds.MixedFit
    heads: pd.DataFrame
    head_pairs: pd.DataFrame
    head_counts: pd.DataFrame
    causal: pd.DataFrame | None = None
    causal_summary: pd.DataFrame | None = None


def seed_stage(stage1: Inflection, stage2: Discovery, stage4: Causal | None = None, interval: str = "boot",
               n_perm: int = 2000, seed: int = 0) -> Replication:
    """Compare the seeds of finished stages 1, 2 (and 4 when given); needs a suite with at least two seeds."""
    n = stage1.best["seed"].nunique()
    if n < 2:
        raise ValueError(f"seed replication needs a suite with >= 2 seeds; {stage1.suite.name} has {n}")
    per, spread = seeds.inflection_agreement(stage1.inflection, interval)
    mixed = seeds.mixed_model(stage1.best, stage1.inflection, score=stage1.score)
    causal = summary = None
    if stage4 is not None:
        causal, summary = seeds.causal_agreement(stage4.tests)
    return Replication(per, spread, mixed, seeds.head_agreement(stage2.stats, n_perm=n_perm, seed=seed),
                  seeds.pairwise_jaccard(stage2.stats), seeds.seed_counts(stage2.stats),
                  causal, summary)


def _table(df: pd.DataFrame, cols: list[str] | None = None) -> str:
    d = df if cols is None else df[[c for c in cols if c in df.columns]]
    return d.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def seeds_report(s5: Replication) -> str:
    """Plain-text stage 5 (what ``lexprobe seeds`` prints)."""
    lines = ["stage 5: seed replication", "", "per-seed inflection (onset of the rise; intervals in steps):",
             _table(s5.inflection, ["model", "seed", "curve_model", "shape", "onset_step", "onset_low_step",
                                    "onset_high_step", "onset_boot_low_step", "onset_boot_high_step",
                                    "log10_onset", "se_log10"]), ""]
    for r in s5.spread.itertuples():
        lines.append(f"{r.model}: onsets in {r.n_with_onset} of {r.n_seeds} seeds, steps {r.min_onset_step:.0f}-"
                     f"{r.max_onset_step:.0f}; spread in log10(step+1): range {r.range_log10:.3f}, sd "
                     f"{r.sd_log10:.3f}")
        lines.append(f"  do seeds differ more than their {r.interval} intervals allow? Cochran's Q = {r.Q:.3g} "
                     f"(df {r.df}, {r.n_tested} seeds with an interval), p = {r.p:.3g}, I^2 = {r.I2:.2f}")
    lines += ["", "mixed model: score ~ pre + post, pre = x - c, post = max(x - c, 0), x = log10(step+1); random "
              "intercept + post slope per seed (statsmodels MixedLM, REML):"]
    for r in s5.mixed.info.itertuples():
        lines.append(f"  {r.model}: c = {r.breakpoint_log10:.3f} (step {r.breakpoint_step:.0f}, {r.breakpoint_from}); "
                     f"random effects: {r.random_effects}; {r.n_obs} observations, {r.n_seeds} seeds; converged: "
                     f"{r.converged}{'; ' + r.warnings if r.warnings else ''}")
    lines += [_table(s5.mixed.fixed), "", "seed variance components:", _table(s5.mixed.variance), ""]
    lines.append("head agreement (heads passing discovery; mean pairwise Jaccard over seeds):")
    for r in s5.heads.itertuples():
        lines.append(f"  {r.model}: heads per seed {r.heads_per_seed}; Jaccard {r.jaccard:.3f} vs heads shuffled "
                     f"within layer {r.null_within_layer_mean:.3f} (p = {r.p_within_layer:.3g}) and anywhere "
                     f"{r.null_anywhere_mean:.3f} (p = {r.p_anywhere:.3g}); layer-level agreement "
                     f"{r.layer_jaccard:.3f} vs anywhere {r.layer_null_mean:.3f} (p = {r.p_layer:.3g}); "
                     f"{r.n_perm} permutations")
        if r.seeds_with_heads < 2:
            lines.append(f"  ({r.seeds_with_heads} seed(s) with passing heads: no agreement between seeds to measure)")
    lines += ["", "seeds selecting each (layer, head) (rows: layer, columns: head):"]
    for model, g in s5.head_counts.groupby("model"):
        n = int(g["n_seeds"].max())
        lines.append(f"  {model} (of {n} seeds):")
        lines.append(g.pivot(index="layer", columns="head", values="n_seeds_selecting").to_string())
    if s5.causal is not None:
        lines += ["", "stage-4 effect per seed at the last checkpoint (drop in best-layer R^2; p vs random sets):",
                  _table(s5.causal), "", _table(s5.causal_summary)]
    return "\n".join(lines)
