"""Validation runner and report: on a suite with a planted circuit (``lexprobe.organism.planted``), is the planted
head set what carries the cue (the construct check), and how well do stages 2 and 4 find it?

The planted heads come from the suite's metadata (``planted_heads``: {seed: [[layer, head], ...]}). The construct
check cuts, at the last checkpoint, the target->cue edges of the planted heads and of all the other heads
(:class:`lexprobe.engine.interventions.EdgeKnockout`, scores masked before the softmax), measured through the results
store like every intervention. The head maps held against the planted set are listed in :func:`head_maps`; a map is
any table with columns model, seed, step, layer, head, significant.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from lexprobe.analysis import validity
from lexprobe.analysis.performance import with_pairs
from lexprobe.checkpoints.suites import Suite
from lexprobe.engine.interventions import EdgeKnockout
from lexprobe.stages.causal import Causal
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.sweep.run import extract


@dataclass
class Validation:
    """The planted heads, the construct check per seed, precision/recall per map and seed, and when each planted
    head first becomes significant in each per-checkpoint map (beside the planted and estimated onsets)."""

    planted: pd.DataFrame
    construct: pd.DataFrame
    validity: pd.DataFrame
    first_significant: pd.DataFrame


def planted_heads(suite: Suite) -> pd.DataFrame:
    """The suite's planted heads (columns model, seed, layer, head); fails loudly for a suite without a plant."""
    heads = suite.metadata.get("planted_heads")
    if not heads:
        raise ValueError(f"suite {suite.name} has no planted circuit (no planted_heads in its metadata); use an "
                         "organism profile with a plant, e.g. organism-planted")
    return pd.DataFrame([{"model": model, "seed": int(sd), "layer": int(layer), "head": int(head)}
                         for model in suite.models for sd, pairs in heads.items() if int(sd) in suite.seeds
                         for layer, head in pairs])


def head_maps(stage2: Discovery, stage4: Causal, step: int) -> dict[str, pd.DataFrame]:
    """Every head map held against the planted set, by name (one line per map): stage 2's passing heads, the
    original study's selection rule alone (its ``selected`` column: slope > 0 and BH q < .05), stage 4's causal
    map (single-head zero ablation) and its patching maps (necessity by noising, sufficiency by denoising one head
    at the noun), and the heads of stage 4's greedy sufficient sets. Stage 2 judges whole trajectories, so its maps
    sit at ``step`` (the last)."""
    stats = stage2.stats
    heads = stage4.patch_maps[stage4.patch_maps["unit"] == "head"] if len(stage4.patch_maps) else stage4.patch_maps
    return {"stage 2 passes": stats.assign(step=step, significant=stats["passes"]),
            "original rule": stats.assign(step=step, significant=stats["selected"]),
            "stage 4 causal map": stage4.causal_map,
            "stage 4 necessity (noising)": heads[heads["direction"] == "noise"] if len(heads) else heads,
            "stage 4 sufficiency (denoising)": heads[heads["direction"] == "denoise"] if len(heads) else heads,
            "stage 4 greedy sufficient set": greedy_map(stats, stage4.greedy_tests)}


def greedy_map(stats: pd.DataFrame, greedy: pd.DataFrame) -> pd.DataFrame:
    """The greedy sufficient sets as a head map: every head of each (model, seed) at each greedy checkpoint,
    ``significant`` where the head is in the set. The set is *chosen* to recover the clean score, not tested head by
    head: its column says which heads the search names."""
    cols = ["model", "seed", "step", "layer", "head", "significant"]
    if greedy.empty:
        return pd.DataFrame(columns=cols)
    grid = stats[["model", "seed", "layer", "head"]].drop_duplicates()
    sets = greedy[["model", "seed", "step", "set"]].merge(grid, on=["model", "seed"])
    named = [f"L{r.layer}H{r.head}" in str(r.set).split() for r in sets.itertuples()]
    return sets.assign(significant=named)[cols]


def construct_best(stage1: Inflection, planted: pd.DataFrame, n_layers: int, n_heads: int,
                   progress: bool = True) -> pd.DataFrame:
    """Best-layer scores at the last checkpoint per (model, seed), condition ``intact``, ``planted`` (the planted
    heads' target->cue edges cut) and ``others`` (the same edges cut in every other head)."""
    suite, stim, last = stage1.suite, stage1.stimuli, stage1.steps[-1]
    every = {(layer, head) for layer in range(n_layers) for head in range(n_heads)}
    out = []
    for (model, sd), g in planted.groupby(["model", "seed"]):
        mine = {(int(r.layer), int(r.head)) for r in g.itertuples()}
        knockouts = {"planted": EdgeKnockout(tuple(mine)), "others": EdgeKnockout(tuple(every - mine))}
        cuts = {iv.condition: name for name, iv in knockouts.items()}
        extract(suite, stim, (last,), models=(str(model),), seeds=(int(sd),), root=stage1.root,
                config=replace(stage1.config, save_embeddings=False),
                interventions=list(knockouts.values()), progress=progress)
        dist = stage1.store.load("distances", suite=suite.name, stimuli=stim.name, condition=["intact", *cuts],
                                 step=[last], model=[str(model)], seed=[int(sd)])
        best = stage1.best_of(with_pairs(dist, stim))
        out.append(best.assign(condition=best["condition"].replace(cuts)))
    return pd.concat(out, ignore_index=True)


def validation_stage(stage1: Inflection, stage2: Discovery, stage4: Causal, progress: bool = True) -> Validation:
    """The construct check (measured through stage 1's results store) and the validity tables of a finished
    study on a planted suite."""
    planted = planted_heads(stage1.suite)
    stats = stage2.stats
    n_layers, n_heads = int(stats["layer"].max()) + 1, int(stats["head"].max()) + 1
    construct = validity.construct_check(construct_best(stage1, planted, n_layers, n_heads, progress),
                                         score=stage1.score)
    maps = head_maps(stage2, stage4, stage1.steps[-1])
    per_step = {k: m for k, m in maps.items() if m["step"].nunique() > 1}
    first = validity.first_significant(per_step, planted).assign(planted_onset=stage1.onset).merge(
        stage1.inflection[["model", "seed", "onset_step"]], on=["model", "seed"], how="left")
    return Validation(planted, construct, validity.validity(maps, planted), first)


def validation_report(v: Validation) -> str:
    """Plain-text validation (what ``lexprobe validate`` prints)."""
    c = v.construct
    score = next(col for col in c.columns if col.endswith("_intact")).removesuffix("_intact")
    lines = [f"construct check at the last checkpoint (share of best-layer {score} removed; planted heads' "
             f"target->cue edges cut: must be >= {validity.MIN_PLANTED:.0%}; the same edges cut in every other head: "
             f"<= {validity.MAX_OTHERS:.0%})"]
    for r in c.itertuples():
        heads = " ".join(f"L{x.layer}H{x.head}" for x in v.planted[v.planted["seed"] == r.seed].itertuples())
        lines.append(f"  seed {r.seed} step {r.step}: planted {heads}; intact {getattr(r, f'{score}_intact'):.4f}; "
                     f"planted cut removes {r.removed_planted:.1%}, others cut removes {r.removed_others:.1%}: "
                     f"{'PASS' if r.passes else 'FAIL (the planted set is not ground truth for this seed)'}")
    lines += ["", "pipeline validity against the planted set at the last checkpoint (precision: share of found heads "
              "that are planted, '-' when none found; recall: share of planted heads found)"]
    tab = v.validity.assign(precision=v.validity["precision"].map(lambda p: "-" if p != p else f"{p:.2f}"),
                            recall=v.validity["recall"].map(lambda p: f"{p:.2f}"))
    lines.append(tab[["method", "seed", "planted", "found", "true_positives", "precision", "recall", "found_heads"]]
                 .to_string(index=False))
    lines += ["", "first checkpoint at which each planted head is significant (per-checkpoint maps), beside the "
              "planted onset and stage 1's onset estimate"]
    lines.append(v.first_significant[["method", "seed", "layer", "head", "first_significant_step", "significant_at",
                                      "checkpoints", "planted_onset", "onset_step"]].to_string(index=False))
    return "\n".join(lines)
