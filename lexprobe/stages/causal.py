"""Stage 4: are the heads found by discovery causally necessary, and which heads suffice?

It composes two halves, each a module of its own: ablation (:mod:`lexprobe.stages.ablation`: the discovered heads
against random sets by zero / mean / resample ablation, edge knockout and the original study's QK edits, the
single-head causal map, controls, exactness) and activation patching (:mod:`lexprobe.stages.patching`: noising and
denoising every head and layer at the noun against a counterfactual set, their maps across development, the
exactness controls, the greedy sufficient sets). Every condition of both is measured through the results store in
one sweep per (model, seed) and scope.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from lexprobe.analysis.performance import with_pairs
from lexprobe.base.progress import tqdm
from lexprobe.checkpoints.integrity import config_of, folder_of
from lexprobe.checkpoints.suites import CheckpointUnavailable
from lexprobe.engine.interventions import KINDS, copy_source
from lexprobe.stages.ablation import (
    LEAN,
    METHODS,
    Ablation,
    ablation_results,
    design_for,
    measured_conditions,
)
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.patching import (
    GREEDY,
    Patching,
    counterfactual_of,
    greedy_searches,
    greedy_steps,
    patch_design,
    patch_map_of,
    patch_table,
    patching_results,
    redundancy,
)
from lexprobe.stages.registry import Context, Plugin, Prepared, Reads
from lexprobe.sweep.run import extract

__all__ = ["LEAN", "METHODS", "Causal", "CausalStage"]


@dataclass
class Causal(Patching, Ablation):
    """Stage 4's result: the ablation half's tables (:class:`~lexprobe.stages.ablation.Ablation`), then the patching
    half's (:class:`~lexprobe.stages.patching.Patching`)."""


class CausalStage(Plugin):
    """Stage 4: design both halves, measure every condition (cached in the study's results store) and test them on
    the checkpoints of a finished inflection stage, best layers chosen by the study's scoring rule: ``n_random``
    random sets per null at the last checkpoint, ``n_random_dev`` at every checkpoint, the single-head and patch
    maps at about ``map_steps`` log-spaced checkpoints (0: every one); patching against the study's
    ``counterfactual`` (default: :func:`~lexprobe.stages.patching.counterfactual_of`, kept in the stage cache), the
    greedy sufficient sets at about ``redundancy_steps`` log-spaced checkpoints."""

    label = "stage 4"
    aliases, summary = (), "stage 4: ablations vs random head sets, patching maps, greedy sufficient sets"
    name, title, result = "causal", "Are the heads causally necessary?", Causal
    needs = ("inflection", "discovery")
    reads = ("n_random", "n_random_dev", "map_steps", "layer_matched", "n_boot", "seed", "methods", "head_map",
             "redundancy_steps", "counterfactual")


    def prepare(self, study: Context, earlier: dict[str, Any]) -> Prepared:
        s1: Inflection = earlier["inflection"]
        s2: Discovery = earlier["discovery"]
        cf = study.counterfactual if study.counterfactual is not None else study.derived(
            "causal-counterfactual", s1.steps[-1], lambda: {"neutral": counterfactual_of(s1)})["neutral"]
        refused = refused_methods(s1, study.methods)
        methods = tuple(m for m in study.methods if m not in refused)
        plan = design_for(s2, study.n_random, study.n_random_dev, methods, study.layer_matched, study.seed,
                          copy_source(s1.suite.steps), patch_map_of(cf), study.head_map)
        reads = [Reads("distances", s1.stimuli.name, tuple(rows["condition"]), steps, (model,), (sd,))
                 for model, sd, steps, rows in measured_conditions(plan, s1.steps, study.map_steps)]
        searches = greedy_searches(s1, cf, study.n_random, study.seed)
        greedy_at = greedy_steps(s1, study.redundancy_steps)
        reads += [Reads(m, s1.stimuli.name, (search.condition,), greedy_at[model, sd], (model,), (sd,))
                  for (model, sd), search in searches.items() for m in GREEDY]
        return Prepared(reads, inputs={"counterfactual": cf.hash},
                        data={"refused": refused, "design": plan, "counterfactual": cf, "searches": searches,
                              "greedy_at": greedy_at})

    def run(self, study: Context, earlier: dict[str, Any], prepared: Prepared) -> Causal:
        s1: Inflection = earlier["inflection"]
        s2: Discovery = earlier["discovery"]
        suite, stim, steps = study.checkpoint_suite, s1.stimuli, s1.steps
        plan, cf = prepared.data["design"], prepared.data["counterfactual"]
        n_boot, seed = study.n_boot, study.seed
        cfg = replace(study.config, save_embeddings=False, save_heads=False)
        for model, sd, chosen, rows in tqdm(list(measured_conditions(plan, steps, study.map_steps)),
                                            desc="stage 4: seeds x scopes", disable=not study.progress):
            if len(rows):
                extract(suite, stim, chosen, models=(model,), seeds=(sd,), root=study.store.root, config=cfg,
                        conditions=plan.at(rows), progress=study.progress)
        table = plan.table
        patch_cond = sorted(set(table.loc[table["family"] == "patch", "condition"]))
        conds = ["intact", *(c for c in table["condition"].unique() if c not in patch_cond)]
        dist = study.store.load("distances", suite=suite.name, stimuli=stim.name, condition=conds, step=list(steps),
                                model=list(table["model"].unique()), seed=[int(s) for s in table["seed"].unique()])
        pairs = with_pairs(dist.drop(columns="patch") if "patch" in dist.columns else dist, stim)
        key = table.drop(columns=["model", "seed"]).drop_duplicates("condition")
        ablation = ablation_results(s1, s2, table, pairs, key, n_boot, seed, prepared.data["refused"])
        n_layers, n_heads = int(s2.stats["layer"].max()) + 1, int(s2.stats["head"].max()) + 1
        ptab = patch_table(patch_design(n_layers, n_heads), n_heads)
        maps, pexact, pfirst, pagree = patching_results(s1, s2, study.store, patch_cond, pairs, ptab, n_boot, seed)
        curve, greedy = redundancy(s1, prepared.data["searches"], prepared.data["greedy_at"], store=study.store,
                                   config=cfg, progress=study.progress)
        patching = Patching(counterfactual=cf, patches=ptab, patch_maps=maps, patch_exactness=pexact,
                            patch_first=pfirst, patch_agreement=pagree, greedy_curve=curve, greedy_tests=greedy)
        return Causal(**vars(ablation), **vars(patching))


STAGE = CausalStage()


def refused_methods(s1: Inflection, methods: tuple[str, ...]) -> dict[str, str]:
    """The QK-edit methods the suite's architecture cannot apply exactly (read from its last checkpoint's
    ``config.json`` on disk, as JSON: a study opened again imports no transformers for it), with why
    (:meth:`lexprobe.engine.interventions.Kind.refusal`)."""
    if not any(KINDS[m].qk for m in methods):
        return {}
    suite = s1.suite
    folder = folder_of(suite.checkpoint(suite.models[0], suite.seeds[0], s1.steps[-1]))
    try:
        config = config_of(folder) if folder is not None else None
    except CheckpointUnavailable:
        config = None
    if config is None:  # no config to read: the engine still refuses such an edit when it measures it
        return {}
    return {m: why for m in methods if (why := KINDS[m].refusal(config))}


