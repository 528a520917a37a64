"""Stage 2 runner: which heads' attention from the target to its cue tracks disambiguation across training? Reads
the stored head tables of a finished stage 1 (same results store, same best-layer score); and its text report."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lexprobe.analysis.selection import discover, trajectories
from lexprobe.stages.inflection import Inflection

CRITERIA = {"selected": "FDR rule", "diff_ok": "1st-diff", "logstep_ok": "log-step", "perm_ok": "permutation",
            "beats_prev": "> prev-token", "passes": "PASS (FDR + 1st-diff)"}


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


def head_stage(stage1: Inflection, n_perm: int = 2000, seed: int = 0) -> Discovery:
    """Head discovery on the checkpoints of a finished inflection stage, against the score it follows."""
    heads = stage1.store.load("heads", suite=stage1.suite.name, stimuli=stage1.stimuli.name,
                              condition=stage1.condition, step=list(stage1.steps), model=list(stage1.suite.models),
                              seed=list(stage1.suite.seeds))
    return Discovery(heads, trajectories(heads), discover(heads, stage1.best, score=stage1.score, n_perm=n_perm,
                                                       seed=seed))


def heads_report(s2: Discovery) -> str:
    """Plain-text stage 2 (what ``lexprobe heads`` prints): heads meeting each criterion, and the passing ones."""
    st = s2.stats
    n = st.groupby(["model", "seed"]).size().iloc[0]
    perms = f"{int(st['n_perm'].min())} shuffles, floor {1 / (st['n_perm'].min() + 1):.2g}" if "n_perm" in st else ""
    lines = [f"FDR: BH over the {n} heads of each seed, per criterion (permutation null: {perms}; a lone head needs "
             f"p <= {0.05 / n:.2g}); the previous-token control is a paired one-sided t-test at the last checkpoint",
             f"heads (of {n} per seed) meeting each criterion:",
             st.groupby(["model", "seed"])[list(CRITERIA)].sum().rename(columns=CRITERIA).to_string()]
    for (_, seed), g in st.groupby(["model", "seed"]):
        passing = g[g["passes"]].sort_values("q_diff")
        names = ", ".join(f"L{r.layer}H{r.head} (r={r.r:.2f}, q={r.q:.1g}, q_diff={r.q_diff:.2g}, "
                          f"{'beats' if r.beats_prev else 'not above'} prev-token)" for r in passing.itertuples())
        lines.append(f"seed {seed}: passing heads: {names or '-'}")
    return "\n".join(lines)
