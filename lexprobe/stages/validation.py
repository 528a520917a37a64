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
from lexprobe.stages.pairs import PairTests, pair_cost, partners_map, with_readings
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
    methods: pd.DataFrame  # every method (stage 2's rules, the maps, the new ones) at the last checkpoint, per seed
    decoys: pd.DataFrame  # per checked step: what each decoy head carries cut alone and left alone; certified empty
    pairs: pd.DataFrame  # pairwise noising and denoising of the top heads at the last checkpoint, read per pair


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


def decoy_heads(suite: Suite) -> pd.DataFrame:
    """The suite's decoy heads (columns model, seed, layer, head, kind; empty for a plant without decoys)."""
    return pd.DataFrame([{"model": model, "seed": int(sd), "layer": int(layer), "head": int(head), "kind": kind}
                         for model in suite.models
                         for sd, rows in suite.metadata.get("decoy_heads", {}).items() if int(sd) in suite.seeds
                         for layer, head, kind in rows],
                        columns=["model", "seed", "layer", "head", "kind"])


def head_maps(by_step: pd.DataFrame, stage4: Causal, rule: str) -> dict[str, pd.DataFrame]:
    """Every head map held against the planted set, by name (one line per map), each with a threshold-free
    ``score``: stage 2's passing heads (under the study's ``rule``) and the original study's selection rule alone,
    both from stage 2's statistics had training stopped at each checkpoint (``by_step``,
    :func:`lexprobe.analysis.detection.stage2_by_step`; scored by :func:`~lexprobe.analysis.detection.rule_score`),
    stage 4's causal map (single-head zero ablation, scored by its effect) and its patching maps (necessity by
    noising, sufficiency by denoising one head at the noun; scored by the share removed or restored), the heads of
    stage 4's greedy sufficient sets, and stage 2's passing heads confirmed by patching (:func:`confirmed_map`)."""
    pm = stage4.patching.patch_maps
    heads = pm[pm["unit"] == "head"] if len(pm) else pm
    noise = heads[heads["direction"] == "noise"] if len(heads) else heads
    denoise = heads[heads["direction"] == "denoise"] if len(heads) else heads
    passes = by_step.assign(significant=by_step["passes"], score=detection.rule_score(by_step, rule))
    maps = {"stage 2 passes": passes,
            "original rule": by_step.assign(significant=by_step["selected"],
                                            score=detection.rule_score(by_step, "original")),
            "stage 4 causal map": stage4.ablation.causal_map.assign(
                score=stage4.ablation.causal_map.get("effect", stage4.ablation.causal_map.get("significant"))),
            "stage 4 necessity (noising)": noise.assign(score=noise["share"]) if len(noise) else noise,
            "stage 4 sufficiency (denoising)": denoise.assign(score=denoise["share"]) if len(denoise) else denoise,
            "stage 4 greedy sufficient set": greedy_map(by_step, stage4.patching.greedy_tests),
            CONFIRMED: confirmed_map(passes, noise, denoise)}
    if stage4.ablation.causal_map.empty:  # the single-head ablation map is opt-in (Study(head_map=True))
        del maps["stage 4 causal map"]
    return maps


CONFIRMED = "stage 2 + patching"
PARTNERS = "patching + pairs"
HIDDEN = ("stage 2 passes", "original rule")  # maps that are one of stage 2's rules under another name
# the methods a study without a plant computes: candidates for what the report's "which heads" findings quote
# (protocol 3, decision 2); "patching + pairs" needs the validation's pair tests
CANDIDATES = (*detection.RULE_TITLES.values(), "stage 4 necessity (noising)", "stage 4 sufficiency (denoising)",
              "stage 4 greedy sufficient set", CONFIRMED)


def confirmed_map(passes: pd.DataFrame, noise: pd.DataFrame, denoise: pd.DataFrame) -> pd.DataFrame:
    """Stage 2 confirmed by patching (protocol 3's first new method), at each checkpoint stage 4 patched: the heads
    that pass stage 2 there and are significant in the single-head noising or denoising map. Stage 2's evidence is
    correlational (a head may attend as the cue becomes useful and write nothing that carries it); patching tests
    what the head writes at the noun. Scored by the lower of the two percentile ranks within the checkpoint (stage
    2's score, the larger patching share): a head ranks high only when both rank it high."""
    cols = ["model", "seed", "step", "layer", "head"]
    if noise.empty or denoise.empty:
        return pd.DataFrame(columns=[*cols, "significant", "score"])
    patch = noise[cols + ["significant", "share"]].merge(denoise[cols + ["significant", "share"]], on=cols,
                                                         suffixes=("_noise", "_denoise"))
    out = passes[cols + ["significant", "score"]].merge(patch, on=cols)
    out["patched"] = out["significant_noise"].astype(bool) | out["significant_denoise"].astype(bool)
    out["share"] = out[["share_noise", "share_denoise"]].max(axis=1)
    score = pd.concat([detection.rank_within(out, "score"), detection.rank_within(out, "share")], axis=1).min(axis=1)
    return out.assign(significant=out["significant"].astype(bool) & out["patched"], score=score)[
        [*cols, "significant", "score"]]


def pair_results(study: Context, stage1: Inflection, stage4: Causal) -> pd.DataFrame:
    """The pair tests (:class:`~lexprobe.stages.pairs.PairTests`) of every (model, seed) at the last checkpoint,
    against stage 4's counterfactual set, measured through the study's results store and read back."""
    test = PairTests(stage4.patching.counterfactual, stage1.scoring)
    suite, stim, last = stage1.suite, stage1.stimuli, stage1.steps[-1:]
    extract(suite, stim, last, root=study.store.root, conditions=[test], progress=study.progress,
            config=replace(study.config, save_embeddings=False, save_heads=False))
    table = study.store.load("pair_tests", suite=suite.name, stimuli=stim.name, condition=test.condition,
                             step=list(last))
    table = table.drop(columns=["suite", "stimuli", "condition", "reading"], errors="ignore")
    return with_readings(table.sort_values(["model", "seed", "a", "b"], ignore_index=True))


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
                   n_heads: int, decoys: pd.DataFrame | None = None) -> pd.DataFrame:
    """Best-layer scores at the construct check's checkpoints per (model, seed), condition ``intact``, ``planted``
    (the planted heads' target->cue edges cut), ``others`` (the same edges cut in every other head), ``all`` and
    each planted head's ``cut:`` and ``alone:`` cuts."""
    suite, stim, steps = stage1.suite, stage1.stimuli, construct_steps(stage1.steps, stage1.onset)
    out = []
    for (model, sd), knockouts in construct_knockouts(planted, n_layers, n_heads, decoys).items():
        cuts = {iv.condition: name for name, iv in knockouts.items()}
        extract(suite, stim, steps, models=(model,), seeds=(sd,), root=study.store.root,
                config=replace(study.config, save_embeddings=False),
                conditions=list(knockouts.values()), progress=study.progress)
        dist = study.store.load("distances", suite=suite.name, stimuli=stim.name, condition=["intact", *cuts],
                                step=list(steps), model=[model], seed=[sd])
        best = study.scoring.best(with_pairs(dist, stim))
        out.append(best.assign(condition=best["condition"].replace(cuts)))
    return pd.concat(out, ignore_index=True)


def construct_knockouts(planted: pd.DataFrame, n_layers: int, n_heads: int, decoys: pd.DataFrame | None = None
                        ) -> dict[tuple[str, int], dict[str, EdgeKnockout]]:
    """Per (model, seed): the construct check's cuts: ``planted``, ``others`` and ``all`` (what the edges carry at
    all), and per planted head (and per decoy head)
    ``cut:LxHy`` (its edges alone) and ``alone:LxHy`` (every other head's)."""
    every = {(layer, head) for layer in range(n_layers) for head in range(n_heads)}
    out = {}
    for (model, sd), g in planted.groupby(["model", "seed"]):
        mine = {(int(r.layer), int(r.head)) for r in g.itertuples()}
        cuts = {"planted": EdgeKnockout(tuple(sorted(mine))), "others": EdgeKnockout(tuple(sorted(every - mine))),
                "all": EdgeKnockout(tuple(sorted(every)))}
        lures = set() if decoys is None else {(int(r.layer), int(r.head)) for r in decoys[
            (decoys["model"] == model) & (decoys["seed"] == sd)].itertuples()}
        for h in sorted((mine if len(mine) > 1 else set()) | lures):  # one planted head: its cuts are the set's
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
        planted, decoys = planted_heads(s1.suite), decoy_heads(s1.suite)
        n_layers, n_heads = int(stats["layer"].max()) + 1, int(stats["head"].max()) + 1
        reads = [Reads("distances", s1.stimuli.name, ("intact", *(iv.condition for iv in cuts.values())),
                       construct_steps(s1.steps, s1.onset), (model,), (sd,))
                 for (model, sd), cuts in construct_knockouts(planted, n_layers, n_heads, decoys).items()]
        return Prepared(reads, data={"planted": planted, "decoys": decoys, "shape": (n_layers, n_heads)})

    def run(self, study: Context, earlier: dict[str, Any], prepared: Prepared) -> Validation:
        s1: Inflection = earlier["inflection"]
        s2: Discovery = earlier["discovery"]
        planted, decoys = prepared.data["planted"], prepared.data["decoys"]
        n_layers, n_heads = prepared.data["shape"]
        best = construct_best(study, s1, planted, n_layers, n_heads, decoys)
        construct = validity.construct_check(best, score=s1.score)
        per_head = validity.per_head_check(best, planted, score=s1.score)
        last = at_last_checkpoint(per_head)
        certified = last[last["certified"]][["model", "seed", "layer", "head"]].merge(
            planted, on=["model", "seed", "layer", "head"])
        lures = validity.decoy_check(best, decoys, score=s1.score)
        empty = lures[lures["certified_empty"]][["model", "seed", "layer", "head"]].drop_duplicates()
        by_step = detection.stage2_by_step(s2.heads, s1.best, s1.score, study.n_perm, study.seed, final=s2.stats)
        by_step = by_step.assign(passes=passing(by_step, study.selection))
        stage4: Causal = earlier["causal"]
        maps = head_maps(by_step, stage4, study.selection)
        pairs = pair_results(study, s1, stage4)
        maps[PARTNERS] = partners_map(maps["stage 4 necessity (noising)"], maps["stage 4 sufficiency (denoising)"],
                                      pairs)
        per_step = {k: m for k, m in maps.items() if m["step"].nunique() > 1}
        first = validity.first_significant(per_step, planted).assign(planted_onset=s1.onset).merge(
            s1.inflection[["model", "seed", "onset_step"]], on=["model", "seed"], how="left").merge(
            planted, on=["model", "seed", "layer", "head"])
        first = detection.lags(first, detection.carrier_steps(per_head))
        kind = detection.planted_type(s1.suite.metadata.get("plant", {}))
        methods = detection.scored({**detection.rule_maps(by_step), **{k: m for k, m in maps.items()
                                                                         if k not in HIDDEN}},
                                   certified, last_only=True, decoys=empty)
        return Validation(planted, construct, validity.validity(maps, certified, empty), first, per_head,
                          detection.curves(maps, certified, empty),
                          detection.readings(per_head, stage4.patching.greedy_tests, kind), methods, lures, pairs)


    def cost(self, study: Context, costing: Costing) -> StageCost:
        """The construct check's edge cuts of each seed at its checkpoints and its pair tests at the last one (nothing
        on a suite without a plant)."""
        out, suite = StageCost(self.name), study.checkpoint_suite
        if not has_plant(suite):
            return out
        steps = construct_steps(study.checkpoints, suite.metadata.get("onset"))
        sentences = len(study.stimulus_set.sentences)
        for m in costing.models:
            planted = planted_heads(suite)
            for cuts in construct_knockouts(planted[planted["model"] == m.model], m.n_layers, m.n_heads,
                                            decoy_heads(suite)).values():
                passes = sum(iv.cost(m.n_layers, m.n_heads) for iv in cuts.values())
                out.add(len(steps) * len(cuts), len(steps) * passes * sentences, 0,
                        len(steps) * len(cuts) * m.table_bytes["distances"],
                        len(steps) * (m.load_seconds + passes * m.measure_seconds) / costing.workers)
            pair = pair_cost(m.n_layers, m.n_heads)
            n = len(suite.seeds)
            out.add(n, n * pair * sentences, n, 0.0, n * (m.load_seconds + pair * m.measure_seconds) / costing.workers)
        return out


STAGE = ValidationStage()


def has_plant(suite: Suite) -> bool:
    """Whether the suite records a planted circuit to validate the stages against."""
    return "planted_heads" in suite.metadata








