"""Stage 5 runner and view: do the stage 1, 2 and 4 findings replicate across training seeds?

It takes finished earlier stages (their tables are cached in the results store) and compares seeds with
:mod:`lexprobe.analysis.agreement`: inflection agreement, a piecewise mixed model with seed random effects, head
agreement against within-layer and anywhere permutation nulls, and the stage-4 ablation effect per seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lexprobe.analysis import agreement as seeds
from lexprobe.stages.causal import Causal
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.registry import PARTS, Context, Plugin, Prepared, parts_skipped, ran


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
    parts_skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PARTS))


class ReplicationStage(Plugin):
    """Stage 5: compare the seeds of finished stages 1, 2 and 4 (bootstrap intervals of the onsets); needs a suite
    with at least two seeds. Without stage 4 (skipped or refused) the stage-4 effects per seed are left out."""

    label = "stage 5"
    aliases, summary = ("seeds",), "stage 5: seed agreement of inflections, mixed model, heads, causal effects"
    name, title, result = "replication", "Do the findings replicate across seeds?", Replication
    needs, uses, reads = ("inflection", "discovery"), ("causal",), ("n_perm", "seed")

    def skip(self, study: Context, earlier: dict[str, Any]) -> str | None:
        suite = study.checkpoint_suite
        return None if len(suite.seeds) >= 2 else (f"seed replication needs a suite with >= 2 seeds; {suite.name} "
                                                   f"has {len(suite.seeds)}")



    def run(self, study: Context, earlier: dict[str, Any], prepared: Prepared) -> Replication:
        out = replicate(earlier["inflection"], earlier["discovery"], ran(earlier, "causal"), n_perm=study.n_perm,
                        seed=study.seed)
        out.parts_skipped = parts_skipped(earlier, {"the stage-4 effects per seed": "causal"})
        return out


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
        causal, summary = seeds.causal_agreement(stage4.ablation.tests)
    return Replication(per, spread, mixed, seeds.head_agreement(stage2.stats, n_perm=n_perm, seed=seed),
                       seeds.pairwise_jaccard(stage2.stats), seeds.seed_counts(stage2.stats), causal, summary)


STAGE = ReplicationStage()


