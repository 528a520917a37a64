"""Stage 1 runner: when does disambiguation take off? Extract every checkpoint through the store, then compute
per-layer performance, each checkpoint's best layer and the inflection per (model, seed); and its view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from lexprobe.analysis.curves import fitted_curves, inflections
from lexprobe.analysis.performance import Scoring, performance, with_pairs
from lexprobe.checkpoints.suites import Checkpoint, Suite
from lexprobe.stages.costs import Costing, StageCost
from lexprobe.stages.registry import Context, Plugin, Prepared, Reads
from lexprobe.stimuli.tables import Stimuli
from lexprobe.store.results import ResultsStore
from lexprobe.sweep.pool import parallel_map
from lexprobe.sweep.run import extract


@dataclass
class Inflection:
    """Inflection detection: pair-level distances, per-layer performance, best layer per checkpoint (by the study's
    ``scoring`` rule), one row per (model, seed) in ``inflection`` (its ``onset_step`` is "the inflection": the
    onset of the rise) and the chosen curve model's fitted values in ``fitted``. ``store`` is the results store it
    was computed in: later stages read theirs from the same one."""

    suite: Suite
    stimuli: Stimuli
    store: ResultsStore
    status: pd.DataFrame
    pairs: pd.DataFrame
    perf: pd.DataFrame
    best: pd.DataFrame
    inflection: pd.DataFrame
    fitted: pd.DataFrame
    scoring: Scoring
    condition: str = "intact"

    @property
    def score(self) -> str:
        """The best-layer score followed across training (r2, r2_signed or auc)."""
        return self.scoring.score

    @property
    def target(self) -> str:
        """What distances are scored against: ``relatedness`` (human norms) or ``same`` (same vs different sense)."""
        return self.scoring.target

    @property
    def onset(self) -> int | None:
        """The organism's planted onset (None for suites without ground truth)."""
        return self.suite.metadata.get("onset")

    @property
    def steps(self) -> tuple[int, ...]:
        """The checkpoints measured, in order."""
        return tuple(sorted(int(s) for s in self.best["step"].unique()))

    def tokenizer_at(self, step: int) -> Checkpoint:
        """The checkpoint whose tokenizer checks the sets derived from the stimuli (perturbed, counterfactual): the
        suite's first model and seed at ``step``."""
        return self.suite.checkpoint(self.suite.models[0], self.suite.seeds[0], step)


class InflectionStage(Plugin):
    """Stage 1: extract (or reuse) every checkpoint on the intact model, or under the study's ``intervention``
    (stored under its derived condition), then performance and inflection per (model, seed)."""

    label = "stage 1"
    aliases, summary = (), "stage 1: when disambiguation takes off (measures missing checkpoints first)"
    name, title, result = "inflection", "When does disambiguation take off?", Inflection
    reads = ("n_boot", "seed", "intervention")
    given = ("suite", "stimuli", "store")

    def given_values(self, study: Context) -> dict[str, Any]:
        return {"suite": study.checkpoint_suite, "stimuli": study.stimulus_set, "store": study.store}

    def prepare(self, study: Context, earlier: dict[str, Any]) -> Prepared:
        condition = study.intervention.condition
        return Prepared([Reads("distances", study.stimulus_set.name, (condition,), study.checkpoints)],
                        data={"condition": condition})

    def run(self, study: Context, earlier: dict[str, Any], prepared: Prepared) -> Inflection:
        suite, stimuli, steps, scoring = study.checkpoint_suite, study.stimulus_set, study.checkpoints, study.scoring
        status = extract(suite, stimuli, steps, root=study.store.root, config=study.config,
                         conditions=[study.intervention], progress=study.progress)
        condition = prepared.data["condition"]
        if not status["status"].isin(["measured", "cached"]).any():
            raise RuntimeError(f"none of the {len(status)} checkpoints of {suite.name} could be measured; first "
                               f"reason: {status['reason'].iloc[0]}")
        dist = study.store.load("distances", suite=suite.name, stimuli=stimuli.name, condition=condition,
                                step=list(steps), model=list(suite.models), seed=list(suite.seeds))
        skipped = status.loc[status["status"] == "skipped", ["model", "seed", "step"]].drop_duplicates()
        if len(skipped):  # a defect found now excludes what an earlier run stored of that checkpoint
            dist = dist.merge(skipped.assign(_skip=True), on=["model", "seed", "step"], how="left")
            dist = dist[dist.pop("_skip").isna()]
        pairs = with_pairs(dist, stimuli)
        perf = performance(pairs)
        best = scoring.pick(perf)
        tokens = suite.metadata.get("tokens") or {}
        if tokens:  # tokens seen, where the suite's revision names give them: an x-axis shared across suites
            best = best.assign(tokens=best["step"].map(tokens))
        inf = inflections(best, pairs, n_boot=study.n_boot, by=scoring.by,
                          exclude_embedding=scoring.exclude_embedding, target=scoring.target, seed=study.seed,
                          map_fn=parallel_map)
        return Inflection(suite, stimuli, study.store, status, pairs, perf, best, inf,
                          fitted_curves(best, scoring.score), scoring, condition=condition)


    def cost(self, study: Context, costing: Costing) -> StageCost:
        """Every checkpoint it will measure (asked of :meth:`prepare`), loaded and measured once."""
        out, suite, kept = StageCost(self.name), study.checkpoint_suite, study.config.measurements
        reads = self.prepare(study, {}).reads
        for m in costing.models:
            n = sum(len(r.steps) * len(r.seeds or suite.seeds) for r in reads if m.model in (r.models or suite.models))
            out.add(n, n * len(study.stimulus_set.sentences), n * (1 + len(kept)),
                    n * sum(m.table_bytes[k] for k in kept), n * (m.load_seconds + m.measure_seconds) / costing.workers)
        return out


STAGE = InflectionStage()






