"""Stage 5 runner and view: do the stage 1, 2 and 4 findings replicate across training seeds?

It takes finished earlier stages (their tables are cached in the results store) and compares seeds with
:mod:`lexprobe.analysis.agreement`: inflection agreement, a piecewise mixed model with seed random effects, head
agreement against within-layer and anywhere permutation nulls, and the stage-4 ablation effect per seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from lexprobe.analysis import agreement as seeds
from lexprobe.analysis import findings
from lexprobe.base.view import Block, Figure, Table, Text, View
from lexprobe.stages.causal import Causal
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.registry import Context, Plugin, Prepared


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


class ReplicationStage(Plugin):
    """Stage 5: compare the seeds of finished stages 1, 2 and 4 (bootstrap intervals of the onsets); needs a suite
    with at least two seeds."""

    name, title, result = "replication", "Do the findings replicate across seeds?", Replication
    needs, reads = ("inflection", "discovery", "causal"), ("n_perm", "seed")

    def skip(self, study: Context, earlier: dict[str, Any]) -> str | None:
        suite = study.checkpoint_suite
        return None if len(suite.seeds) >= 2 else (f"seed replication needs a suite with >= 2 seeds; {suite.name} "
                                                   f"has {len(suite.seeds)}")



    def run(self, study: Context, earlier: dict[str, Any], prepared: Prepared) -> Replication:
        return replicate(earlier["inflection"], earlier["discovery"], earlier["causal"], n_perm=study.n_perm,
                         seed=study.seed)


def replicate(stage1: Inflection, stage2: Discovery, stage4: Causal | None, *, n_perm: int,
              seed: int) -> Replication:
    """Compare the seeds of finished stages 1, 2 (and 4 when given); needs a suite with at least two seeds."""
    n = stage1.best["seed"].nunique()
    if n < 2:
        raise ValueError(f"seed replication needs a suite with >= 2 seeds; {stage1.suite.name} has {n}")
    per, spread = seeds.inflection_agreement(stage1.inflection, "boot")
    mixed = seeds.mixed_model(stage1.best, stage1.inflection, score=stage1.score)
    causal = summary = None
    if stage4 is not None:
        causal, summary = seeds.causal_agreement(stage4.tests)
    return Replication(per, spread, mixed, seeds.head_agreement(stage2.stats, n_perm=n_perm, seed=seed),
                       seeds.pairwise_jaccard(stage2.stats), seeds.seed_counts(stage2.stats), causal, summary)


STAGE = ReplicationStage()


def describe(s5: Replication, stage1: Inflection) -> View:
    """Stage 5's view: every seed's trajectory and inflection, their spread, the mixed model, head agreement between
    seeds and (with stage 4) the ablation effect per seed; ``stage1``: the inflection stage it compared."""
    blocks: list[Block] = [
        Text(findings.lead(findings.replication(s5))),
        Figure("seed_trajectories", {"best": stage1.best, "inflection": stage1.inflection, "onset": stage1.onset,
                                     "score": stage1.score, "fitted": stage1.fitted},
               "every seed's trajectory with its onset and profile interval", "seed-trajectories"),
        Table(s5.inflection, "Stage 1's onsets per seed on the log10(step+1) scale the spread test uses (se from the "
                             "bootstrap interval)", collapsed=True),
        Table(s5.spread, "Spread of the onsets and Cochran's Q: do seeds differ more than their intervals allow?"),
        Text("Mixed model: score ~ pre + post, pre = x - c, post = max(x - c, 0), x = log10(step+1); random intercept "
             "+ post slope per seed (statsmodels MixedLM, REML).", note=True),
        Table(s5.mixed.fixed, "Mixed model fixed effects (score ~ pre + post around the inflection; Wald 95% CI)"),
        Table(s5.mixed.variance, "Seed variance components"),
        Table(s5.mixed.info, "Mixed model fit"),
        Figure("seed_head_map", {"counts": s5.head_counts}, "how many seeds select each head", "seed-heads")]
    for model, g in s5.head_counts.groupby("model"):
        chosen = g[g["n_seeds_selecting"] > 0].sort_values(["n_seeds_selecting", "layer", "head"],
                                                           ascending=[False, True, True])
        heads = ", ".join(f"L{r.layer}H{r.head} {r.n_seeds_selecting}" for r in chosen.itertuples()) or "none"
        blocks.append(Text(f"{model}: seeds (of {int(g['n_seeds'].max())}) selecting each head: {heads}"))
    blocks.append(Table(s5.heads, "Head agreement: Jaccard vs within-layer and anywhere permutation nulls"))
    blocks += [Text(f"{r.model}: {r.seeds_with_heads} seed(s) with passing heads: no agreement between seeds to "
                    "measure") for r in s5.heads.itertuples() if r.seeds_with_heads < 2]
    blocks.append(Table(s5.head_pairs, "Jaccard per pair of seeds", collapsed=True))
    if s5.causal is not None and len(s5.causal):  # the stage-4 null tests of the discovered heads, when it ran any
        blocks += [Figure("seed_ablation_chart", {"per_seed": s5.causal}, "ablation effect per seed", "seed-ablation"),
                   Table(s5.causal, "Stage 4's null tests per seed at the last checkpoint (as in stage 4), the "
                                    "inputs of the combined test below", collapsed=True),
                   Table(s5.causal_summary, "Stage-4 effect across seeds (Fisher's combined p)")]
    return View(f"Stage 5 · {STAGE.title}", "stage5", tuple(blocks))
