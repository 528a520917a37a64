"""Stage runners that notebooks, the CLI report and checks call: extract through the store, then analyse.

Each returns a small dataclass of tidy tables; heavy work goes through the results store, so a second call only
reads Parquet files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lexprobe.analysis.heads import discover, trajectories
from lexprobe.analysis.inflection import inflections
from lexprobe.analysis.performance import best_layer, performance, with_pairs
from lexprobe.stimuli import Stimuli, load_stimuli
from lexprobe.store import ResultsStore
from lexprobe.paths import results_dir
from lexprobe.specs import resolve
from lexprobe.suites import Suite, parse_steps
from lexprobe.sweep import extract


@dataclass
class Stage1:
    """Inflection detection: pair-level distances, per-layer performance, best layer, inflection per seed."""

    suite: Suite
    stimuli: Stimuli
    status: pd.DataFrame
    pairs: pd.DataFrame
    perf: pd.DataFrame
    best: pd.DataFrame
    inflection: pd.DataFrame

    @property
    def onset(self) -> int | None:
        """The organism's planted onset (None for suites without ground truth)."""
        return self.suite.metadata.get("onset")


@dataclass
class Stage2:
    """Head discovery: per-head statistics and attention trajectories."""

    heads: pd.DataFrame
    trajectories: pd.DataFrame
    stats: pd.DataFrame


def _store(root: str | Path | None) -> ResultsStore:
    return ResultsStore(root or results_dir())


def inflection_stage(suite: str | Suite = "organism", stimuli: str | Stimuli = "lexprobe_nouns",
                     steps: str = "all", root: str | Path | None = None, n_boot: int = 200,
                     exclude_embedding: bool = False, progress: bool = True) -> Stage1:
    """Extract (or reuse) every checkpoint, then compute performance and inflection per (model, seed)."""
    suite = resolve(suite) if isinstance(suite, str) else suite
    stimuli = load_stimuli(stimuli) if isinstance(stimuli, str) else stimuli
    chosen = parse_steps(steps, suite.steps)
    status = extract(suite, stimuli, chosen, root=root, progress=progress)
    if not status["status"].isin(["measured", "cached"]).any():
        raise RuntimeError(f"none of the {len(status)} checkpoints of {suite.name} could be measured; first reason: "
                           f"{status['reason'].iloc[0]}")
    dist = _store(root).load("distances", suite=suite.name, stimuli=stimuli.name, condition="intact",
                             step=list(chosen), model=list(suite.models), seed=list(suite.seeds))
    pairs = with_pairs(dist, stimuli)
    perf = performance(pairs)
    best = best_layer(perf, exclude_embedding=exclude_embedding)
    inf = inflections(best, pairs, n_boot=n_boot, exclude_embedding=exclude_embedding, target=perf["target"].iloc[0])
    return Stage1(suite, stimuli, status, pairs, perf, best, inf)


def head_stage(stage1: Stage1, root: str | Path | None = None, n_perm: int = 2000) -> Stage2:
    """Head discovery on the checkpoints of a finished inflection stage (reads stored head tables)."""
    heads = _store(root).load("heads", suite=stage1.suite.name, stimuli=stage1.stimuli.name, condition="intact",
                              step=sorted(stage1.best["step"].unique()), model=list(stage1.suite.models),
                              seed=list(stage1.suite.seeds))
    return Stage2(heads, trajectories(heads), discover(heads, stage1.best, n_perm=n_perm))
