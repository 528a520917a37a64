"""What each of a study's five stages will cost, worked out offline from its settings (``lexprobe plan``).

Per stage: units measured ((checkpoint, condition) pairs), forward passes (sentences run through a model), files
and disk in the packed results store (:mod:`lexprobe.pack`: per checkpoint folder a manifest and one part per
measurement and column set), and time on this machine's sweep workers. Per-unit times and table sizes come from
:mod:`lexprobe.plan`'s calibration on the main stimulus set, scaled by sentence count for stage 3's perturbed sets
(table bytes by their rows). Stage 4's conditions come from its own design (:func:`design` on stand-in discovery
results with ``assumed_heads`` passing heads per seed, since the real ones are known only after stage 2) and its own
checkpoint choice per scope (:func:`measured_conditions`); an intervened forward is costed as the share of an
intact one that its layers from :meth:`~lexprobe.interventions.Intervention.first_layer` on make up (the engine
reuses the intact layers below it), and a patch map as ``PATCH_PREP`` intact passes plus ``PATCH_RUN`` of one per
patch (``benchmarks/patch_cost.py`` on the pythia-14m shape). The greedy sufficient sets are costed as
``GREEDY_ROUNDS`` rounds over every head plus the random-set tests, at ``redundancy_steps`` checkpoints per seed (an
estimate: the search stops when 80% is recovered), on the worker pool.
Stages 2 and 5 measure nothing: they read stored tables (their stage cache entries are counted).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

import pandas as pd

from lexprobe.perturb import neutral, standard_set
from lexprobe.plan import UnitCost, duration, model_shape, size, unit_cost
from lexprobe.pool import workers
from lexprobe.stages.stage1_inflection import Stage1
from lexprobe.stages.stage2_heads import Stage2
from lexprobe.stages.stage3_perturbation import Stage3, measurable
from lexprobe.stages.stage4_causal import Stage4, copy_source, design, measured_conditions
from lexprobe.stages.stage5_seeds import Stage5
from lexprobe.stimuli import Stimuli
from lexprobe.study import Study
from lexprobe.suites import log_subset

OWN_COLUMNS: set[str] = {"patch"}  # stage-4 scopes whose tables carry extra columns: one more part per checkpoint
PATCH_PREP, PATCH_RUN = 2.3, 0.11  # a patch map's preparation and one patched run, in intact passes
GREEDY_ROUNDS = 4


@dataclass
class StageCost:
    """One stage's estimated cost, summed over the suite's models and seeds."""

    stage: str
    units: int = 0
    forward: int = 0
    files: int = 0  # in the results store
    cache: int = 0  # of the stage's stage-cache entry
    disk: float = 0.0
    seconds: float = 0.0


def cache_files(cls: type) -> int:
    """Files of one stage cache entry of ``cls``: its manifest and a table per DataFrame field, nested dataclass
    fields included (stimulus sets a stage keeps are not counted)."""
    hints = typing.get_type_hints(cls)
    n = 1
    for f in dataclasses.fields(cls):
        inner = [t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if dataclasses.is_dataclass(t)]
        if hints[f.name] is pd.DataFrame:
            n += 1
        elif inner:
            n += cache_files(typing.cast(type, inner[0])) - 1
    return n


def _scaled(cost: UnitCost, main: Stimuli, other: Stimuli) -> tuple[float, dict[str, float]]:
    """Measure seconds and table bytes of ``other`` from the main set's calibration."""
    per_sentence = len(other.sentences) / len(main.sentences)
    rows = {"distances": len(other.pairs) / len(main.pairs), "heads": per_sentence, "embeddings": per_sentence}
    return cost.measure_seconds * per_sentence, {m: b * rows[m] for m, b in cost.table_bytes.items()}


def stand_in_discovery(n_layers: int, n_heads: int, model: str, seeds: tuple[int, ...], passing: int) -> pd.DataFrame:
    """Stage 2 stats with ``passing`` heads of the middle layer passing discovery in every seed."""
    mid = n_layers // 2
    return pd.DataFrame([{"model": model, "seed": sd, "layer": layer, "head": head,
                          "passes": layer == mid and head < passing}
                         for sd in seeds for layer in range(n_layers) for head in range(n_heads)])


def stage_costs(study: Study, assumed_heads: int = 2) -> list[StageCost]:
    """Stages 1-5 of ``study`` as designed, on this machine's sweep workers."""
    suite, stim, steps = study.checkpoint_suite, study.stimulus_set, study.checkpoints
    n_workers = workers()
    sets = measurable(standard_set(stim), stim)
    p_steps = log_subset(steps, study.perturb_steps) if study.perturb_steps else steps
    s1, s3, s4 = StageCost("1 inflection"), StageCost("3 perturbation"), StageCost("4 causal")
    for model in suite.models:
        cfg, download = model_shape(suite, model)
        cost = unit_cost(cfg, download, stim, study.config)
        n_ck = len(suite.seeds) * len(steps)
        kept = study.config.measurements
        s1.units += n_ck
        s1.forward += n_ck * len(stim.sentences)
        s1.files += n_ck * (1 + len(kept))
        s1.disk += n_ck * sum(cost.table_bytes[m] for m in kept)
        s1.seconds += n_ck * (cost.load_seconds + cost.measure_seconds) / n_workers
        p_ck = len(suite.seeds) * len(p_steps)
        s3.seconds += p_ck * cost.load_seconds / n_workers  # one load per checkpoint for every set
        for ps in sets.values():
            seconds, tables = _scaled(cost, stim, ps)
            s3.units += p_ck
            s3.forward += p_ck * len(ps.sentences)
            s3.files += p_ck * 3  # manifest, distances, heads
            s3.disk += p_ck * (tables["distances"] + tables["heads"])
            s3.seconds += p_ck * seconds / n_workers
        stats = stand_in_discovery(cfg.num_hidden_layers, cfg.num_attention_heads, model, suite.seeds, assumed_heads)
        plan = design(stats, cfg.num_hidden_layers, cfg.num_attention_heads, study.n_random or 0,
                      study.n_random_dev or 0, study.methods, study.layer_matched, study.seed,
                      copy_source(suite.steps), neutral(stim))
        for _, _, chosen, rows in measured_conditions(plan, steps, study.map_steps or 0):
            if rows.empty:
                continue
            n = len(chosen) * len(rows)
            n_layers = cfg.num_hidden_layers
            passes = sum(PATCH_PREP + PATCH_RUN * len(iv.patches) if hasattr(iv, "patches")
                         else max(n_layers - iv.first_layer(n_layers), 1) / n_layers
                         for iv in rows["intervention"])  # intact-pass equivalents per checkpoint
            patch_rows = sum(len(iv.patches) for iv in rows["intervention"] if hasattr(iv, "patches"))
            s4.units += n
            s4.forward += int(len(chosen) * passes * len(stim.sentences))
            s4.files += len(chosen) * len(set(rows["scope"]) & OWN_COLUMNS)
            s4.disk += len(chosen) * (len(rows) + patch_rows) * cost.table_bytes["distances"]
            s4.seconds += len(chosen) * (cost.load_seconds + passes * cost.measure_seconds) / n_workers
        n_heads = cfg.num_hidden_layers * cfg.num_attention_heads
        greedy = PATCH_PREP + PATCH_RUN * (GREEDY_ROUNDS * n_heads + 2 * (study.n_random or 0) + 4 * GREEDY_ROUNDS)
        g_ck = len(suite.seeds) * len(log_subset(steps, study.redundancy_steps or 0))
        s4.forward += int(g_ck * greedy * len(stim.sentences))
        s4.seconds += g_ck * (cost.load_seconds + greedy * cost.measure_seconds) / n_workers
    s2, s5 = StageCost("2 heads"), StageCost("5 seeds")
    for cost_, cls in ((s1, Stage1), (s2, Stage2), (s3, Stage3), (s4, Stage4), (s5, Stage5)):
        cost_.cache = cache_files(cls)
    return [s1, s2, s3, s4, s5]


def study_plan(study: Study, assumed_heads: int = 2) -> str:
    """A plain-text table of :func:`stage_costs`, with totals."""
    costs = stage_costs(study, assumed_heads)
    suite = study.checkpoint_suite
    lines = [f"stages of a study of {suite.name} ({', '.join(suite.models)}; {len(suite.seeds)} seeds x "
             f"{len(study.checkpoints)} steps), stimuli {study.stimulus_set.name}, from an empty store, on "
             f"{workers()} worker process(es); stage 4 designed as if {assumed_heads} heads pass discovery per seed "
             f"(n_random {study.n_random}, n_random_dev {study.n_random_dev}, map_steps {study.map_steps}, "
             f"perturb_steps {study.perturb_steps})",
             f"  {'stage':16s} {'units':>10s} {'forward passes':>15s} {'files':>8s} {'cache files':>12s} "
             f"{'disk':>10s} {'time':>10s}"]
    total = StageCost("total", *(sum(getattr(c, f.name) for c in costs) for f in dataclasses.fields(StageCost)[1:]))
    for c in [*costs, total]:
        lines.append(f"  {c.stage:16s} {c.units:>10,d} {c.forward:>15,d} {c.files:>8,d} {c.cache:>12,d} "
                     f"{size(c.disk):>10s} {duration(c.seconds):>10s}")
    lines.append("  (stages 2 and 5 only read stored tables: no forward passes; their time is not estimated; disk "
                 "counts result tables, not the stage cache)")
    return "\n".join(lines)
