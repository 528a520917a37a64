"""Stage 1 runner: when does disambiguation take off? Extract every checkpoint through the store, then compute
per-layer performance, each checkpoint's best layer and the inflection per (model, seed); and its view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from lexprobe.analysis import findings
from lexprobe.analysis.curves import fitted_curves, inflections
from lexprobe.analysis.performance import Scoring, performance, with_pairs
from lexprobe.base.view import Block, Figure, Table, Text, View
from lexprobe.checkpoints.suites import Checkpoint, Suite
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


STAGE = InflectionStage()


def _interval(lo: float, hi: float) -> str:
    """A profile interval in words; one of zero width is a failure of the interval, not a certainty."""
    if lo != lo:
        return "none"
    if lo == hi:
        return (f"FAILED (zero width at {lo:.0f}: no other point of the profile's grid lies inside the confidence "
                "set, so the grid is coarser than the interval; read the item-bootstrap interval instead)")
    return f"[{lo:.0f}, {hi:.0f}]"


def onset_words(inflection: pd.DataFrame | None, model: str, seed: int) -> str:
    """Stage 1's inflection onset of (model, seed) as words ('' without stage 1's table or its row)."""
    if inflection is None:
        return ""
    o = inflection.loc[(inflection["model"] == model) & (inflection["seed"] == seed), "onset_step"]
    if o.empty:
        return ""
    return f"inflection onset {float(o.iloc[0]):.0f}" if pd.notna(o.iloc[0]) else "no inflection onset"


def describe(s1: Inflection) -> View:
    """Stage 1's view (``lexprobe inflection``): the suite, warnings about duplicate or skipped checkpoints, the
    trajectories, and per seed the curve model AICc chose, onset (= "the inflection") with its intervals, midpoint,
    saturation and steepest rise; with a planted onset, whether each seed's onset interval lies after it and its
    estimate is within 4x of it."""
    prov = s1.store.provenance(suite=s1.suite.name, stimuli=s1.stimuli.name, condition=s1.condition)
    blocks: list[Block] = [Text(findings.lead(findings.inflection(s1))), Text(
        f"suite {s1.suite.name}: {s1.best['model'].nunique()} model(s), {s1.best['seed'].nunique()} seed(s), "
        f"{s1.best['step'].nunique()} checkpoints, stimuli {s1.stimuli.name} ({len(s1.stimuli.pairs)} pairs, target: "
        f"{s1.target}); best layer by {s1.scoring.by}"
        f"{' (embedding layer excluded)' if s1.scoring.exclude_embedding else ''}")]
    blocks += [Text(f"WARNING: {r.model} seed {r.seed} step {r.step} has the same weights as the previous step")
               for r in prov[prov["same_as_previous"]].itertuples()]
    blocks += [Text(f"WARNING: skipped {r.model} seed {r.seed} step {r.step}: {r.reason}")
               for r in s1.status[s1.status["status"] == "skipped"].drop_duplicates(
                   ["model", "seed", "step"]).itertuples()]
    blocks += [Text(f"revision {name!r} left out: {why}", note=True)
               for name, why in s1.suite.metadata.get("left_out", {}).items()]
    blocks += [
        Text(f"Best-layer {s1.score} across training per seed; the inflection is the onset of the rise (curve model "
             "chosen by AICc on log10(step+1)), with profile-likelihood and item-bootstrap intervals."),
        Figure("performance_chart", {"best": s1.best, "inflection": s1.inflection, "onset": s1.onset,
                                     "score": s1.score, "fitted": s1.fitted},
               "best-layer score across training, all seeds", "performance"),
        Figure("layer_chart", {"perf": s1.perf}, "score per layer and checkpoint (mean over seeds)", "layers"),
        Table(s1.inflection[["model", "seed", "curve_model", "shape", "onset_step", "onset_low_step", "onset_high_step",
                             "onset_boot_low_step", "onset_boot_high_step", "midpoint_step", "saturation_step",
                             "changepoint_step"]], "Inflection per seed")]
    last = s1.best.sort_values("step").groupby(["model", "seed"])
    for r in s1.inflection.itertuples():
        g = last.get_group((r.model, r.seed))[s1.score]
        blocks.append(Text(f"seed {r.seed}: best-layer {s1.score} {g.iloc[0]:.3f} at the first checkpoint, "
                           f"{g.iloc[-1]:.3f} at the last; steepest rise {r.max_increase_from:.0f}->"
                           f"{r.max_increase_step:.0f} ({r.max_increase_per_decade:.3f} per decade)"))
    if s1.onset is not None:
        blocks.append(Text(f"Planted onset of the organism: step {s1.onset}."))
        for r in s1.inflection.itertuples():
            after = r.onset_low_step > s1.onset and r.onset_low_step < r.onset_high_step  # no (or a failed) interval
            within = s1.onset / 4 <= r.onset_step <= s1.onset * 4
            estimate = f"{r.onset_step:.0f}" if r.onset_step == r.onset_step else f"none ({r.shape}, {r.selected_by})"
            blocks.append(Text(f"seed {r.seed}: onset interval {_interval(r.onset_low_step, r.onset_high_step)} "
                               f"lies after the onset ({s1.onset}): {'yes' if after else 'NO'}; onset estimate "
                               f"{estimate} within 4x of the onset [{s1.onset / 4:.0f}, {s1.onset * 4:.0f}]: "
                               f"{'yes' if within else 'NO'}"))
    return View(f"Stage 1 · {STAGE.title}", "stage1", tuple(blocks))
