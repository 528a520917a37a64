"""Stage 2 runner: which heads' attention from the target to its cue tracks disambiguation across training? Reads
the stored head tables of a finished stage 1 (same results store, same best-layer score); and its view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from lexprobe.analysis.selection import MIN_STEPS, RULE_TITLES, discover, passing, trajectories
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.registry import Context, Plugin, Prepared, Reads


@dataclass
class Discovery:
    """Head discovery: per-head statistics and attention trajectories."""

    heads: pd.DataFrame
    trajectories: pd.DataFrame
    stats: pd.DataFrame

    def passing(self) -> dict[tuple[str, int], tuple[tuple[int, int], ...]]:
        """Per (model, seed): the (layer, head) pairs that pass discovery, sorted."""
        return {(str(m), int(s)): tuple(sorted((int(r.layer), int(r.head)) for r in g.itertuples() if r.passes))
                for (m, s), g in self.stats.groupby(["model", "seed"])}


class DiscoveryStage(Plugin):
    """Stage 2: head discovery on the checkpoints of a finished inflection stage, against the score it follows."""

    label = "stage 2"
    aliases, summary = ("heads",), "stage 2: heads whose cue attention tracks it (FDR rule + trend control)"
    name, title, result = "discovery", "Which heads track it?", Discovery
    needs, reads = ("inflection",), ("n_perm", "seed", "selection")

    def skip(self, study: Context, earlier: dict[str, Any]) -> str | None:
        n = len(earlier["inflection"].steps)
        return None if n >= MIN_STEPS else f"head discovery needs >= {MIN_STEPS} checkpoints, got {n}"


    def prepare(self, study: Context, earlier: dict[str, Any]) -> Prepared:
        s1: Inflection = earlier["inflection"]
        return Prepared([Reads("heads", s1.stimuli.name, (s1.condition,), s1.steps)])

    def run(self, study: Context, earlier: dict[str, Any], prepared: Prepared) -> Discovery:
        s1: Inflection = earlier["inflection"]
        suite = study.checkpoint_suite
        heads = study.store.load("heads", suite=suite.name, stimuli=s1.stimuli.name, condition=s1.condition,
                                 step=list(s1.steps), model=list(suite.models), seed=list(suite.seeds))
        stats = discover(heads, s1.best, score=s1.score, n_perm=study.n_perm, seed=study.seed)
        return Discovery(heads, trajectories(heads), stats.assign(passes=passing(stats, study.selection),
                                                                  rule=RULE_TITLES[study.selection]))


STAGE = DiscoveryStage()




