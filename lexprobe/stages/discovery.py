"""Stage 2 runner: which heads' attention from the target to its cue tracks disambiguation across training? Reads
the stored head tables of a finished stage 1 (same results store, same best-layer score); and its view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from lexprobe.analysis import findings
from lexprobe.analysis.selection import DEFAULT_RULE, MIN_STEPS, RULE_TITLES, discover, passing, trajectories
from lexprobe.base.view import Figure, Table, Text, View
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.registry import Context, Plugin, Prepared, Reads

CRITERIA = {"selected": "FDR rule", "diff_ok": "1st-diff", "logstep_ok": "log-step", "perm_ok": "permutation",
            "beats_prev": "> prev-token", "passes": "PASS (the study's selection rule)"}


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


def _rule(stats: pd.DataFrame) -> str:
    """The selection rule behind ``passes`` (stats from before the setting existed: the default's)."""
    return str(stats["rule"].iloc[0]) if "rule" in stats.columns and len(stats) else RULE_TITLES[DEFAULT_RULE]


def describe(s2: Discovery) -> View:
    """Stage 2's view: the discovery statistic of every head, how many heads meet each criterion, the heads that
    pass."""
    st = s2.stats
    n = st.groupby(["model", "seed"]).size().iloc[0]
    perms = f"{int(st['n_perm'].min())} shuffles, floor {1 / (st['n_perm'].min() + 1):.2g}" if "n_perm" in st else ""
    return View(f"Stage 2 · {STAGE.title}", "stage2", (
        Text(findings.lead(findings.discovery(s2))),
        Figure("head_stat_chart", {"stats": st}, "head discovery statistic per seed", "heads"),
        Text(f"FDR: BH over the {n} heads of each seed, per criterion (permutation null: {perms}; a lone head needs "
             f"p <= {0.05 / n:.2g}); the previous-token control is a paired one-sided t-test at the last checkpoint. "
             f"Criteria: {'; '.join(f'{k} = {v}' for k, v in CRITERIA.items())}.", note=True),
        Table(st.groupby(["model", "seed"])[list(CRITERIA)].sum().reset_index(),
              f"Heads meeting each criterion per seed (passes = {_rule(st)})"),
        Table(st[st["passes"]][["model", "seed", "layer", "head", "r", "slope", "q", "q_diff", "q_prev", "beats_prev"]],
              "Heads that pass, per seed")))
