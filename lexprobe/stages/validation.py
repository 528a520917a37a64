"""Validation runner and view: on a suite with a planted circuit (``lexprobe.organism.planted``), is the planted
head set what carries the cue (the construct check), and how well do stages 2 and 4 find it?

The planted heads come from the suite's metadata (``planted_heads``: {seed: [[layer, head], ...]}). The construct
check cuts, at the last checkpoint, the target->cue edges of the planted heads and of all the other heads
(:class:`lexprobe.engine.interventions.EdgeKnockout`, scores masked before the softmax), measured through the results
store like every intervention. The head maps held against the planted set are listed in :func:`head_maps`; a map is
any table with columns model, seed, step, layer, head, significant.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from lexprobe.analysis import detection, validity
from lexprobe.analysis.performance import with_pairs
from lexprobe.analysis.primitives import at_last_checkpoint
from lexprobe.analysis.selection import passing
from lexprobe.base.heads import head_name, parse_heads
from lexprobe.checkpoints.suites import Suite, log_subset
from lexprobe.engine.interventions import EdgeKnockout
from lexprobe.stages.causal import Causal
from lexprobe.stages.costs import Costing, StageCost
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.registry import Context, Plugin, Prepared, Reads
from lexprobe.sweep.run import extract

CONSTRUCT_STEPS = 8  # log-spaced checkpoints of the construct check without a planted onset (the last included)
EARLY_STEPS = 3  # log-spaced checkpoints of the construct check before the planted onset


@dataclass
class Validation:
    """The planted heads, the construct check per seed, precision/recall per map and seed at the last checkpoint
    and across development, when each planted head first becomes significant in each map (beside its planted
    opening, the step from which it carries the cue, and stage 1's onset), how the greedy sets read against what was
    planted and learned, and stage 2's selection rules scored per seed."""

    planted: pd.DataFrame  # model, seed, layer, head, opens_step
    construct: pd.DataFrame
    validity: pd.DataFrame
    first_significant: pd.DataFrame  # with the lags after opening and after becoming a carrier
    per_head: pd.DataFrame  # per checked step: what each planted head carries alone and leaves when cut; certified
    curves: pd.DataFrame  # precision and recall of every map at every checkpoint, per seed and pooled
    readings: pd.DataFrame  # planted type, learned reading, greedy reading per seed
    rules: pd.DataFrame  # stage 2's selection rules at the last checkpoint, per seed (counts)


def planted_heads(suite: Suite) -> pd.DataFrame:
    """The suite's planted heads (columns model, seed, layer, head, and the step their edges opened:
    ``opens_step``, 0 for an untimed plant); fails loudly for a suite without a plant."""
    heads = suite.metadata.get("planted_heads")
    if not heads:
        raise ValueError(f"suite {suite.name} has no planted circuit (no planted_heads in its metadata); use an "
                         "organism profile with a plant, e.g. organism-planted")
    opens = {(int(sd), la, he): o for sd, rows in suite.metadata.get("planted_opens", {}).items()
             for la, he, o in rows}
    return pd.DataFrame([{"model": model, "seed": int(sd), "layer": int(layer), "head": int(head),
                          "opens_step": int(opens.get((int(sd), int(layer), int(head)), 0))}
                         for model in suite.models for sd, pairs in heads.items() if int(sd) in suite.seeds
                         for layer, head in pairs])


def head_maps(by_step: pd.DataFrame, stage4: Causal) -> dict[str, pd.DataFrame]:
    """Every head map held against the planted set, by name (one line per map): stage 2's passing heads and the
    original study's selection rule alone (its ``selected`` column: slope > 0 and BH q < .05), both from stage 2's
    statistics had training stopped at each checkpoint (``by_step``, :func:`lexprobe.analysis.detection.
    stage2_by_step`), stage 4's causal map (single-head zero ablation) and its patching maps (necessity by noising,
    sufficiency by denoising one head at the noun), and the heads of stage 4's greedy sufficient sets."""
    pm = stage4.patching.patch_maps
    heads = pm[pm["unit"] == "head"] if len(pm) else pm
    maps = {"stage 2 passes": by_step.assign(significant=by_step["passes"]),
            "original rule": by_step.assign(significant=by_step["selected"]),
            "stage 4 causal map": stage4.ablation.causal_map,
            "stage 4 necessity (noising)": heads[heads["direction"] == "noise"] if len(heads) else heads,
            "stage 4 sufficiency (denoising)": heads[heads["direction"] == "denoise"] if len(heads) else heads,
            "stage 4 greedy sufficient set": greedy_map(by_step, stage4.patching.greedy_tests)}
    if stage4.ablation.causal_map.empty:  # the single-head ablation map is opt-in (Study(head_map=True))
        del maps["stage 4 causal map"]
    return maps


def greedy_map(stats: pd.DataFrame, greedy: pd.DataFrame) -> pd.DataFrame:
    """The greedy sufficient sets as a head map: every head of each (model, seed) at each greedy checkpoint,
    ``significant`` where the head is in the set. The set is *chosen* to recover the clean score, not tested head by
    head: its column says which heads the search names."""
    cols = ["model", "seed", "step", "layer", "head", "significant"]
    if greedy.empty:
        return pd.DataFrame(columns=cols)
    grid = stats[["model", "seed", "layer", "head"]].drop_duplicates()
    sets = greedy[["model", "seed", "step", "set"]].merge(grid, on=["model", "seed"])
    named = [(r.layer, r.head) in parse_heads(r.set) for r in sets.itertuples()]
    return sets.assign(significant=named)[cols]


def construct_steps(steps: tuple[int, ...], onset: int | None) -> tuple[int, ...]:
    """The checkpoints of the construct check among ``steps``: every one from the planted ``onset`` on, where the
    cue's carriers form, and ``EARLY_STEPS`` log-spaced ones before it (about ``CONSTRUCT_STEPS`` log-spaced ones,
    the last included, for a suite without a planted onset)."""
    if onset is None:
        return log_subset(steps, CONSTRUCT_STEPS)
    before = [s for s in steps if s < onset]
    return tuple(sorted(set(log_subset(before, EARLY_STEPS)) | {s for s in steps if s >= onset}))


def construct_best(study: Context, stage1: Inflection, planted: pd.DataFrame, n_layers: int,
                   n_heads: int) -> pd.DataFrame:
    """Best-layer scores at the construct check's checkpoints per (model, seed), condition ``intact``, ``planted``
    (the planted heads' target->cue edges cut), ``others`` (the same edges cut in every other head), ``all`` and
    each planted head's ``cut:`` and ``alone:`` cuts."""
    suite, stim, steps = stage1.suite, stage1.stimuli, construct_steps(stage1.steps, stage1.onset)
    out = []
    for (model, sd), knockouts in construct_knockouts(planted, n_layers, n_heads).items():
        cuts = {iv.condition: name for name, iv in knockouts.items()}
        extract(suite, stim, steps, models=(model,), seeds=(sd,), root=study.store.root,
                config=replace(study.config, save_embeddings=False),
                conditions=list(knockouts.values()), progress=study.progress)
        dist = study.store.load("distances", suite=suite.name, stimuli=stim.name, condition=["intact", *cuts],
                                step=list(steps), model=[model], seed=[sd])
        best = study.scoring.best(with_pairs(dist, stim))
        out.append(best.assign(condition=best["condition"].replace(cuts)))
    return pd.concat(out, ignore_index=True)


def construct_knockouts(planted: pd.DataFrame, n_layers: int, n_heads: int
                        ) -> dict[tuple[str, int], dict[str, EdgeKnockout]]:
    """Per (model, seed): the construct check's cuts: ``planted``, ``others`` and ``all`` (what the edges carry at
    all), and per planted head
    ``cut:LxHy`` (its edges alone) and ``alone:LxHy`` (every other head's)."""
    every = {(layer, head) for layer in range(n_layers) for head in range(n_heads)}
    out = {}
    for (model, sd), g in planted.groupby(["model", "seed"]):
        mine = {(int(r.layer), int(r.head)) for r in g.itertuples()}
        cuts = {"planted": EdgeKnockout(tuple(sorted(mine))), "others": EdgeKnockout(tuple(sorted(every - mine))),
                "all": EdgeKnockout(tuple(sorted(every)))}
        for h in sorted(mine) if len(mine) > 1 else ():  # one planted head: its cuts are the set's
            cuts[f"cut:{head_name(*h)}"] = EdgeKnockout((h,))
            cuts[f"alone:{head_name(*h)}"] = EdgeKnockout(tuple(sorted(every - {h})))
        out[str(model), int(sd)] = cuts
    return out


class ValidationStage(Plugin):
    """On a suite with a planted circuit: the construct check (measured through the study's results store) and the
    validity tables of stages 2 and 4's head maps."""

    label = "validation"
    aliases, summary = ("validate",), "planted-circuit organism: construct check, precision/recall of stages 2 and 4"
    name, title, result = "validation", "Do the stages find the planted circuit?", Validation
    needs, reads = ("inflection", "discovery", "causal"), ("n_perm", "seed", "selection")
    refuses = {"intervention": "the construct check cuts edges of the intact model and scores stage 4's maps, "
                               "which are measured on the intact model"}

    def skip(self, study: Context, earlier: dict[str, Any]) -> str | None:
        suite = study.checkpoint_suite
        return None if has_plant(suite) else f"suite {suite.name} has no planted circuit"


    def prepare(self, study: Context, earlier: dict[str, Any]) -> Prepared:
        s1: Inflection = earlier["inflection"]
        stats = earlier["discovery"].stats
        planted = planted_heads(s1.suite)
        n_layers, n_heads = int(stats["layer"].max()) + 1, int(stats["head"].max()) + 1
        reads = [Reads("distances", s1.stimuli.name, ("intact", *(iv.condition for iv in cuts.values())),
                       construct_steps(s1.steps, s1.onset), (model,), (sd,))
                 for (model, sd), cuts in construct_knockouts(planted, n_layers, n_heads).items()]
        return Prepared(reads, data={"planted": planted, "shape": (n_layers, n_heads)})

    def run(self, study: Context, earlier: dict[str, Any], prepared: Prepared) -> Validation:
        s1: Inflection = earlier["inflection"]
        s2: Discovery = earlier["discovery"]
        planted = prepared.data["planted"]
        best = construct_best(study, s1, planted, *prepared.data["shape"])
        construct = validity.construct_check(best, score=s1.score)
        per_head = validity.per_head_check(best, planted, score=s1.score)
        last = at_last_checkpoint(per_head)
        certified = last[last["certified"]][["model", "seed", "layer", "head"]].merge(
            planted, on=["model", "seed", "layer", "head"])
        by_step = detection.stage2_by_step(s2.heads, s1.best, s1.score, study.n_perm, study.seed, final=s2.stats)
        by_step = by_step.assign(passes=passing(by_step, study.selection))
        maps = head_maps(by_step, earlier["causal"])
        per_step = {k: m for k, m in maps.items() if m["step"].nunique() > 1}
        first = validity.first_significant(per_step, planted).assign(planted_onset=s1.onset).merge(
            s1.inflection[["model", "seed", "onset_step"]], on=["model", "seed"], how="left").merge(
            planted, on=["model", "seed", "layer", "head"])
        first = detection.lags(first, detection.carrier_steps(per_head))
        kind = detection.planted_type(s1.suite.metadata.get("plant", {}))
        rules = detection.scored(detection.rule_maps(by_step), certified, last_only=True)
        return Validation(planted, construct, validity.validity(maps, certified), first, per_head,
                          detection.curves(maps, certified), detection.readings(per_head, earlier["causal"]
                                                                                .patching.greedy_tests, kind), rules)


    def cost(self, study: Context, costing: Costing) -> StageCost:
        """The construct check's edge cuts of each seed at its checkpoints (nothing on a suite without a plant)."""
        out, suite = StageCost(self.name), study.checkpoint_suite
        if not has_plant(suite):
            return out
        steps = construct_steps(study.checkpoints, suite.metadata.get("onset"))
        sentences = len(study.stimulus_set.sentences)
        for m in costing.models:
            planted = planted_heads(suite)
            for cuts in construct_knockouts(planted[planted["model"] == m.model], m.n_layers, m.n_heads).values():
                passes = sum(iv.cost(m.n_layers, m.n_heads) for iv in cuts.values())
                out.add(len(steps) * len(cuts), len(steps) * passes * sentences, 0,
                        len(steps) * len(cuts) * m.table_bytes["distances"],
                        len(steps) * (m.load_seconds + passes * m.measure_seconds) / costing.workers)
        return out


STAGE = ValidationStage()


def has_plant(suite: Suite) -> bool:
    """Whether the suite records a planted circuit to validate the stages against."""
    return "planted_heads" in suite.metadata








