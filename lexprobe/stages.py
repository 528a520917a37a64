"""Stage runners that notebooks, the CLI report and checks call: extract through the store, then analyse.

Each returns a small dataclass of tidy tables; heavy work goes through the results store, so a second call only
reads Parquet files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from lexprobe.analysis.heads import discover, trajectories
from lexprobe.analysis.inflection import fitted_curves, inflections
from lexprobe.analysis.performance import SCORE_OF, best_layer, performance, with_pairs
from lexprobe.extract import ExtractConfig, attention_maps, measure
from lexprobe.interventions import EdgeKnockout, HeadAblation, Intervention, QKEdit
from lexprobe.stimuli import Stimuli, load_stimuli
from lexprobe.store import ResultsStore
from lexprobe.paths import results_dir
from lexprobe.specs import resolve
from lexprobe.suites import Checkpoint, Loaded, Suite, load_checkpoint, parse_steps
from lexprobe.sweep import condition_of, extract


@dataclass
class Stage1:
    """Inflection detection: pair-level distances, per-layer performance, best layer per checkpoint (chosen ``by``),
    one row per (model, seed) in ``inflection`` (its ``onset_step`` is "the inflection": the onset of the rise)
    and the chosen curve model's fitted values in ``fitted``."""

    suite: Suite
    stimuli: Stimuli
    status: pd.DataFrame
    pairs: pd.DataFrame
    perf: pd.DataFrame
    best: pd.DataFrame
    inflection: pd.DataFrame
    fitted: pd.DataFrame
    condition: str = "intact"
    by: str = "r2"

    @property
    def score(self) -> str:
        """The best-layer score followed across training (r2, r2_signed or auc)."""
        return SCORE_OF[self.by]

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
                     exclude_embedding: bool = False, intervention: Intervention | None = None,
                     progress: bool = True, by: str = "r2") -> Stage1:
    """Extract (or reuse) every checkpoint, then compute performance and inflection per (model, seed), on the
    intact model or under ``intervention`` (stored under its derived condition).

    ``by`` picks each checkpoint's best layer: ``"r2"`` (the original study's sign-blind R^2), ``"signed"`` or
    ``"auc"`` (see :func:`lexprobe.analysis.performance.best_layer`)."""
    suite = resolve(suite) if isinstance(suite, str) else suite
    stimuli = load_stimuli(stimuli) if isinstance(stimuli, str) else stimuli
    chosen = parse_steps(steps, suite.steps)
    status = extract(suite, stimuli, chosen, root=root, interventions=[intervention], progress=progress)
    condition = condition_of(intervention)
    if not status["status"].isin(["measured", "cached"]).any():
        raise RuntimeError(f"none of the {len(status)} checkpoints of {suite.name} could be measured; first reason: "
                           f"{status['reason'].iloc[0]}")
    dist = _store(root).load("distances", suite=suite.name, stimuli=stimuli.name, condition=condition,
                             step=list(chosen), model=list(suite.models), seed=list(suite.seeds))
    pairs = with_pairs(dist, stimuli)
    perf = performance(pairs)
    best = best_layer(perf, exclude_embedding=exclude_embedding, by=by)
    inf = inflections(best, pairs, n_boot=n_boot, by=by, exclude_embedding=exclude_embedding,
                      target=perf["target"].iloc[0])
    return Stage1(suite, stimuli, status, pairs, perf, best, inf, fitted_curves(best, SCORE_OF[by]),
                  condition=condition, by=by)


def head_stage(stage1: Stage1, root: str | Path | None = None, n_perm: int = 2000) -> Stage2:
    """Head discovery on the checkpoints of a finished inflection stage (reads stored head tables)."""
    heads = _store(root).load("heads", suite=stage1.suite.name, stimuli=stage1.stimuli.name, condition=stage1.condition,
                              step=sorted(stage1.best["step"].unique()), model=list(stage1.suite.models),
                              seed=list(stage1.suite.seeds))
    return Stage2(heads, trajectories(heads), discover(heads, stage1.best, n_perm=n_perm))


@lru_cache(maxsize=1)
def loaded_checkpoint(ck: Checkpoint) -> Loaded:
    """One checkpoint kept in memory for interactive inspection (only the most recently used one)."""
    return load_checkpoint(ck)


def live_attention(stage1: Stage1, seed: int, step: int, sentence_id: int,
                   intervention: Intervention | None = None) -> dict:
    """One sentence's tokens, target/cue indices and attention (L, H, T, T) at a checkpoint, read through the
    engine (under ``intervention`` when given)."""
    ld = loaded_checkpoint(stage1.suite.checkpoint(stage1.suite.models[0], seed, step))
    sents = stage1.stimuli.sentences
    return attention_maps(ld.model, ld.tokenizer, sents[sents["sentence_id"] == sentence_id], intervention)[0]


def live_performance(stage1: Stage1, seed: int, step: int, intervention: Intervention | None = None) -> pd.DataFrame:
    """Per-layer performance of one checkpoint on the whole stimulus set, measured now (not stored)."""
    ld = loaded_checkpoint(stage1.suite.checkpoint(stage1.suite.models[0], seed, step))
    dist = measure(ld.model, ld.tokenizer, stage1.stimuli, ExtractConfig(save_embeddings=False), intervention,
                   progress=False)["distances"].assign(model=stage1.suite.models[0], seed=seed, step=step)
    return performance(with_pairs(dist, stage1.stimuli), target=stage1.perf["target"].iloc[0])


KINDS = ("none", "zero", "mean", "resample", "knockout", "qk-zero")


def intervention_of(kind: str, heads: tuple) -> Intervention | None:
    """The intervention a widget's choice names: one of :data:`KINDS` on ``heads`` (``none``: the intact model)."""
    if kind not in KINDS:
        raise ValueError(f"unknown intervention kind {kind!r}; choose from {KINDS}")
    if kind == "none" or not heads:
        return None
    if kind == "knockout":
        return EdgeKnockout(heads)
    if kind == "qk-zero":
        return QKEdit(heads)
    return HeadAblation(heads, kind)
