"""Stage 1 runner: when does disambiguation take off? Extract every checkpoint through the store, then compute
per-layer performance, each checkpoint's best layer and the inflection per (model, seed); and its text report."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from lexprobe.analysis.curves import fitted_curves, inflections
from lexprobe.analysis.performance import SCORE_OF, best_layer, performance, with_pairs
from lexprobe.base.paths import results_dir
from lexprobe.checkpoints.suites import Checkpoint, Suite
from lexprobe.engine.extract import ExtractConfig
from lexprobe.engine.interventions import Intervention
from lexprobe.stimuli.tables import Stimuli
from lexprobe.store.results import ResultsStore
from lexprobe.sweep.pool import parallel_map
from lexprobe.sweep.run import condition_of, extract


@dataclass
class Inflection:
    """Inflection detection: pair-level distances, per-layer performance, best layer per checkpoint (chosen ``by``,
    layer 0 left out when ``exclude_embedding``), one row per (model, seed) in ``inflection`` (its ``onset_step``
    is "the inflection": the onset of the rise) and the chosen curve model's fitted values in ``fitted``. ``root``
    is the results store it was computed in: later stages read theirs from the same one."""

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
    exclude_embedding: bool = False
    root: str = ""
    config: ExtractConfig = ExtractConfig()

    @property
    def score(self) -> str:
        """The best-layer score followed across training (r2, r2_signed or auc)."""
        return SCORE_OF[self.by]

    @property
    def target(self) -> str:
        """What distances are scored against: ``relatedness`` (human norms) or ``same`` (same vs different sense)."""
        return str(self.perf["target"].iloc[0])

    @property
    def onset(self) -> int | None:
        """The organism's planted onset (None for suites without ground truth)."""
        return self.suite.metadata.get("onset")

    @property
    def steps(self) -> tuple[int, ...]:
        """The checkpoints measured, in order."""
        return tuple(sorted(int(s) for s in self.best["step"].unique()))

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.root)

    def tokenizer_at(self, step: int) -> Checkpoint:
        """The checkpoint whose tokenizer checks the sets derived from the stimuli (perturbed, counterfactual): the
        suite's first model and seed at ``step``."""
        return self.suite.checkpoint(self.suite.models[0], self.suite.seeds[0], step)

    def scorer(self) -> Inflection:
        """This stage without its tables (the first performance row kept for :attr:`target`): what
        :meth:`best_of` needs, cheap to send to worker processes."""
        return replace(self, status=self.status.iloc[:0], pairs=self.pairs.iloc[:0], perf=self.perf.iloc[:1],
                       best=self.best.iloc[:0], inflection=self.inflection.iloc[:0], fitted=self.fitted.iloc[:0])

    def best_of(self, pairs: pd.DataFrame) -> pd.DataFrame:
        """Best-layer scores of other pair tables (perturbed sets, interventions) by this stage's rule and target."""
        return best_layer(performance(pairs, target=self.target), exclude_embedding=self.exclude_embedding, by=self.by)


def inflection_stage(suite: Suite, stimuli: Stimuli, steps: tuple[int, ...], root: str | Path | None = None,
                     n_boot: int = 200, exclude_embedding: bool = False, intervention: Intervention | None = None,
                     progress: bool = True, by: str = "r2", config: ExtractConfig = ExtractConfig(),
                     seed: int = 0) -> Inflection:
    """Extract (or reuse) every checkpoint, then compute performance and inflection per (model, seed), on the
    intact model or under ``intervention`` (stored under its derived condition).

    ``by`` picks each checkpoint's best layer: ``"r2"`` (the original study's sign-blind R^2), ``"signed"`` or
    ``"auc"`` (see :func:`lexprobe.analysis.performance.best_layer`)."""
    root = str(root or results_dir())
    status = extract(suite, stimuli, steps, root=root, config=config, interventions=[intervention],
                     progress=progress)
    condition = condition_of(intervention)
    if not status["status"].isin(["measured", "cached"]).any():
        raise RuntimeError(f"none of the {len(status)} checkpoints of {suite.name} could be measured; first reason: "
                           f"{status['reason'].iloc[0]}")
    dist = ResultsStore(root).load("distances", suite=suite.name, stimuli=stimuli.name, condition=condition,
                                   step=list(steps), model=list(suite.models), seed=list(suite.seeds))
    pairs = with_pairs(dist, stimuli)
    perf = performance(pairs)
    best = best_layer(perf, exclude_embedding=exclude_embedding, by=by)
    inf = inflections(best, pairs, n_boot=n_boot, by=by, exclude_embedding=exclude_embedding,
                      target=perf["target"].iloc[0], seed=seed, map_fn=parallel_map)
    return Inflection(suite, stimuli, status, pairs, perf, best, inf, fitted_curves(best, SCORE_OF[by]),
                  condition=condition, by=by, exclude_embedding=exclude_embedding, root=root, config=config)


def _steps(lo: float, hi: float, width: int = 6) -> str:
    return f"[{lo:{width}.0f}, {hi:{width}.0f}]" if lo == lo else f"{'none':^{2 * width + 4}}"


def inflection_report(s1: Inflection) -> str:
    """Plain-text stage 1 (what ``lexprobe inflection`` prints): the suite, warnings about duplicate or skipped
    checkpoints, and per seed the curve model AICc chose, onset (= "the inflection"), midpoint, saturation and
    cross-checks; with a planted onset, whether each seed's onset interval lies after it and its estimate is within
    4x of it."""
    prov = s1.store.provenance(suite=s1.suite.name, stimuli=s1.stimuli.name, condition=s1.condition)
    lines = [f"suite {s1.suite.name}: {s1.best['model'].nunique()} model(s), {s1.best['seed'].nunique()} seed(s), "
             f"{s1.best['step'].nunique()} checkpoints, stimuli {s1.stimuli.name} ({len(s1.stimuli.pairs)} pairs, "
             f"target: {s1.target}); best layer by {s1.by}"
             f"{' (embedding layer excluded)' if s1.exclude_embedding else ''}; results in {s1.root}"]
    if s1.onset is not None:
        lines.append(f"planted onset: step {s1.onset}")
    for r in prov[prov["same_as_previous"]].itertuples():
        lines.append(f"WARNING: {r.model} seed {r.seed} step {r.step} has the same weights as the previous step")
    for r in s1.status[s1.status["status"] == "skipped"].itertuples():
        lines.append(f"WARNING: skipped {r.model} seed {r.seed} step {r.step}: {r.reason}")
    lines += ["", "inflection = onset of the rise (curve model chosen by AICc on log10(step+1)); intervals: profile "
              "likelihood, item bootstrap", f"seed  first and last {s1.score}  model       shape                onset  "
              "CI(profile)       CI(item bootstrap)  midpoint  saturation  max-increase/decade  changepoint"]
    last = s1.best.sort_values("step").groupby(["model", "seed"])
    for r in s1.inflection.itertuples():
        g = last.get_group((r.model, r.seed))[s1.score]
        lines.append(f"{r.seed:>4}  {g.iloc[0]:8.3f}  {g.iloc[-1]:7.3f}  {str(r.curve_model):10s}  {r.shape:19s}  "
                     f"{r.onset_step:5.0f}  {_steps(r.onset_low_step, r.onset_high_step)}  "
                     f"{_steps(r.onset_boot_low_step, r.onset_boot_high_step)}    {r.midpoint_step:8.0f}  "
                     f"{r.saturation_step:10.0f}  {r.max_increase_from:>7.0f}->{r.max_increase_step:<7.0f}"
                     f"({r.max_increase_per_decade:.3f})  {r.changepoint_step:11.0f}")
    if s1.onset is None:
        return "\n".join(lines)
    lines.append("")
    for r in s1.inflection.itertuples():
        after = r.onset_low_step > s1.onset  # False when there is no interval
        within = s1.onset / 4 <= r.onset_step <= s1.onset * 4
        estimate = f"{r.onset_step:.0f}" if r.onset_step == r.onset_step else f"none ({r.shape}, {r.selected_by})"
        interval = _steps(r.onset_low_step, r.onset_high_step, 0).strip()
        lines.append(f"seed {r.seed}: onset interval {interval} lies after the onset ({s1.onset}): "
                     f"{'yes' if after else 'NO'}; onset estimate {estimate} within 4x of the onset "
                     f"[{s1.onset / 4:.0f}, {s1.onset * 4:.0f}]: {'yes' if within else 'NO'}")
    return "\n".join(lines)
