"""Stage 4: are the heads found by discovery causally necessary, and which heads suffice?

Its result has two halves, each a module of its own: ablation (:mod:`lexprobe.stages.ablation`: the discovered heads
against random sets by zero / mean / resample ablation, edge knockout and the original study's QK edits, the
single-head causal map, controls, exactness) and activation patching (:mod:`lexprobe.stages.patching`: noising and
denoising every head and layer at the noun against a counterfactual set, their maps across development, the
exactness controls, the greedy sufficient sets). Every condition of both is measured through the results store in
one sweep per (model, seed) and scope. Only the discovered heads' ablations need stage 2: without it, the patching
half, the controls and the opt-in single-head map still run, and the result says what was left out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from lexprobe.analysis.performance import with_pairs
from lexprobe.base.progress import tqdm
from lexprobe.checkpoints.integrity import config_of, folder_of
from lexprobe.checkpoints.suites import CheckpointUnavailable
from lexprobe.engine.interventions import KINDS, copy_source
from lexprobe.engine.patches import PatchMap
from lexprobe.stages.ablation import (
    LEAN,
    METHODS,
    Ablation,
    ablation_results,
    design,
    measured_conditions,
    no_heads_discovered,
)
from lexprobe.stages.costs import Costing, StageCost
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.patching import (
    GREEDY,
    GreedySearch,
    Patching,
    counterfactual_of,
    greedy_checkpoints,
    greedy_searches,
    greedy_steps,
    patch_design,
    patch_table,
    patching_results,
    redundancy,
)
from lexprobe.stages.registry import Context, Plugin, Prepared, Reads, parts_skipped, ran
from lexprobe.stimuli.perturb import neutral
from lexprobe.sweep.run import extract

__all__ = ["LEAN", "METHODS", "Causal", "CausalStage"]


@dataclass
class Causal:
    """Stage 4's result: its two halves, and what was left out (``parts_skipped``: part, needs, reason).

    ``ablation`` (:class:`~lexprobe.stages.ablation.Ablation`): the discovered heads against random sets (``tests``,
    with the QK edits' ``regression`` across development), the controls, exactness and the opt-in single-head map;
    ``patching`` (:class:`~lexprobe.stages.patching.Patching`): every head noised and denoised at the noun
    (``patch_maps``), their exactness controls and the greedy sufficient sets (``greedy_tests``)."""

    ablation: Ablation
    patching: Patching
    parts_skipped: pd.DataFrame


def head_shape(study: Context, stage1: Inflection, stage2: Discovery | None) -> tuple[int, int]:
    """(layers, heads) of the suite's models: from stage 2's statistics, else from stage 1's stored head table at its
    last checkpoint (first model and seed)."""
    if stage2 is not None:
        stats = stage2.stats
    else:
        suite = stage1.suite
        stats = study.store.load("heads", suite=suite.name, stimuli=stage1.stimuli.name, condition=stage1.condition,
                                 step=[stage1.steps[-1]], model=[suite.models[0]], seed=[suite.seeds[0]])
    return int(stats["layer"].max()) + 1, int(stats["head"].max()) + 1


class CausalStage(Plugin):
    """Stage 4: design both halves, measure every condition (cached in the study's results store) and test them on
    the checkpoints of a finished inflection stage, best layers chosen by the study's scoring rule: ``n_random``
    random sets per null at the last checkpoint, ``n_random_dev`` at every checkpoint, the single-head and patch
    maps at about ``map_steps`` log-spaced checkpoints (0: every one); patching against the study's
    ``counterfactual`` (default: :func:`~lexprobe.stages.patching.counterfactual_of`, kept in the stage cache), the
    greedy sufficient sets at about ``redundancy_steps`` log-spaced checkpoints from each seed's onset."""

    label = "stage 4"
    aliases, summary = (), "stage 4: ablations vs random head sets, patching maps, greedy sufficient sets"
    name, title, result = "causal", "Are the heads causally necessary?", Causal
    needs, uses = ("inflection",), ("discovery",)
    reads = ("n_random", "n_random_dev", "map_steps", "layer_matched", "n_boot", "seed", "methods", "head_map",
             "redundancy_steps", "counterfactual")
    refuses = {"intervention": "its ablations, patches and greedy sets are measured on the intact model, and "
                               "composing them with another intervention is not supported: run stage 4 on the "
                               "intact study, study.with_(intervention=INTACT)"}

    def prepare(self, study: Context, earlier: dict[str, Any]) -> Prepared:
        s1: Inflection = earlier["inflection"]
        s2: Discovery | None = ran(earlier, "discovery")
        cf = study.counterfactual if study.counterfactual is not None else study.derived(
            "causal-counterfactual", s1.steps[-1], lambda: {"neutral": counterfactual_of(s1)})["neutral"]
        refused = refused_methods(s1, study.methods)
        n_layers, n_heads = head_shape(study, s1, s2)
        stats = s2.stats if s2 is not None else no_heads_discovered(s1.suite.models, s1.suite.seeds, n_layers,
                                                                    n_heads)
        plan = design(stats, n_layers=n_layers, n_heads=n_heads, n_random=study.n_random,
                      n_random_dev=study.n_random_dev, methods=tuple(m for m in study.methods if m not in refused),
                      layer_matched=study.layer_matched, seed=study.seed, source_step=copy_source(s1.suite.steps),
                      patch_map=PatchMap(cf, patch_design(n_layers, n_heads)), head_map=study.head_map)
        reads = [Reads("distances", s1.stimuli.name, tuple(rows["condition"]), steps, (model,), (sd,))
                 for model, sd, steps, rows in measured_conditions(plan, s1.steps, study.map_steps)]
        if s2 is None:  # the shape came from stage 1's head table
            reads.append(Reads("heads", s1.stimuli.name, (s1.condition,), s1.steps[-1:], s1.suite.models[:1],
                               s1.suite.seeds[:1]))
        searches = greedy_searches(s1, cf, study.n_random, study.seed)
        greedy_at = greedy_steps(s1, study.redundancy_steps)
        reads += [Reads(m, s1.stimuli.name, (search.condition,), greedy_at[model, sd], (model,), (sd,))
                  for (model, sd), search in searches.items() for m in GREEDY]
        return Prepared(reads, inputs={"counterfactual": cf.hash},
                        data={"refused": refused, "design": plan, "counterfactual": cf, "searches": searches,
                              "greedy_at": greedy_at, "shape": (n_layers, n_heads)})

    def run(self, study: Context, earlier: dict[str, Any], prepared: Prepared) -> Causal:
        s1: Inflection = earlier["inflection"]
        s2: Discovery | None = ran(earlier, "discovery")
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
        conds = [s1.condition, *(c for c in table["condition"].unique() if c not in patch_cond)]
        dist = study.store.load("distances", suite=suite.name, stimuli=stim.name, condition=conds, step=list(steps),
                                model=list(table["model"].unique()), seed=[int(s) for s in table["seed"].unique()])
        pairs = with_pairs(dist.drop(columns="patch") if "patch" in dist.columns else dist, stim)
        ablation = ablation_results(s1, s2, table, pairs, n_boot, seed, prepared.data["refused"])
        n_layers, n_heads = prepared.data["shape"]
        ptab = patch_table(patch_design(n_layers, n_heads), n_heads)
        maps, pexact, pfirst, pagree = patching_results(s1, s2, study.store, patch_cond, pairs, ptab, n_boot, seed)
        curve, greedy = redundancy(s1, prepared.data["searches"], prepared.data["greedy_at"], store=study.store,
                                   config=cfg, progress=study.progress)
        patching = Patching(counterfactual=cf, patches=ptab, patch_maps=maps, patch_exactness=pexact,
                            patch_first=pfirst, patch_agreement=pagree, greedy_curve=curve, greedy_tests=greedy)
        skipped = parts_skipped(earlier, {"the discovered heads' ablations and QK edits against random sets":
                                          "discovery", "agreement of the causal maps with discovery": "discovery"})
        return Causal(ablation, patching, skipped)


    def cost(self, study: Context, costing: Costing) -> StageCost:
        """Its own design (:func:`~lexprobe.stages.ablation.design`) on :func:`stand_in_discovery`, each condition
        at its scope's checkpoints (each says what it costs in intact forward passes), and the greedy searches at
        :func:`~lexprobe.stages.patching.greedy_checkpoints` from the first checkpoint (the onset is not known yet)."""
        out, suite, stim, steps = StageCost(self.name), study.checkpoint_suite, study.stimulus_set, study.checkpoints
        cf = neutral(stim)
        for m in costing.models:
            shape = {"n_layers": m.n_layers, "n_heads": m.n_heads}
            stats = stand_in_discovery(m.n_layers, m.n_heads, m.model, suite.seeds, costing.assumed_heads)
            plan = design(stats, **shape, n_random=study.n_random, n_random_dev=study.n_random_dev,
                          methods=study.methods, layer_matched=study.layer_matched, seed=study.seed,
                          source_step=copy_source(suite.steps), patch_map=PatchMap(cf, patch_design(**shape)),
                          head_map=study.head_map)
            for _, _, chosen, rows in measured_conditions(plan, steps, study.map_steps):
                if rows.empty:
                    continue
                conds = plan.at(rows)
                passes = sum(c.cost(m.n_layers, m.n_heads) for c in conds)  # intact-pass equivalents per checkpoint
                patch_rows = sum(len(c.patches) for c in conds if isinstance(c, PatchMap))
                out.add(len(chosen) * len(rows), len(chosen) * passes * len(stim.sentences),
                        len(chosen) * len(set(rows["scope"]) & OWN_COLUMNS),
                        len(chosen) * (len(rows) + patch_rows) * m.table_bytes["distances"],
                        len(chosen) * (m.load_seconds + passes * m.measure_seconds) / costing.workers)
            greedy = GreedySearch(cf, study.scoring, study.n_random).cost(m.n_layers, m.n_heads)
            n = len(suite.seeds) * len(greedy_checkpoints(steps, None, study.redundancy_steps))
            out.add(0, n * greedy * len(stim.sentences), n * len(GREEDY), 0.0,
                    n * (m.load_seconds + greedy * m.measure_seconds) / costing.workers)  # a part per table
        return out


OWN_COLUMNS = {"patch"}  # scopes whose tables carry extra columns: one more part per checkpoint


def stand_in_discovery(n_layers: int, n_heads: int, model: str, seeds: tuple[int, ...], passing: int) -> pd.DataFrame:
    """Stage 2 stats with ``passing`` heads of the middle layer passing discovery in every seed (what stage 4 is
    costed for before stage 2 has run)."""
    mid = n_layers // 2
    return pd.DataFrame([{"model": model, "seed": sd, "layer": layer, "head": head,
                          "passes": layer == mid and head < passing}
                         for sd in seeds for layer in range(n_layers) for head in range(n_heads)])


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


