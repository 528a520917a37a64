"""Stage 4 runner and view: are the heads found by discovery causally necessary for disambiguation?

Per (model, seed) it designs the conditions, measures them through the results store (cached like extraction,
one load per checkpoint), and tests them with :mod:`lexprobe.analysis.nulls`:

* at the last checkpoint: the discovered heads ablated by each method (``zero``, ``mean``, ``resample``, and
  ``knockout`` of only their target->cue edges) against ``n_random`` random same-size sets of non-target heads
  (optionally layer-matched) treated the same way; positive controls: the no-op (drop exactly 0) and knocking out
  the target->cue edges in every head against ``n_random`` knockouts of as many random earlier non-cue edges;
* at every checkpoint: the discovered set's zero ablation against ``n_random_dev`` random sets (when does the
  effect appear, relative to the inflection?) and every single head's zero ablation (the causal head map);
* the original study's QK edit (``qk-zero``, and ``qk-copy`` from the earliest stored checkpoint after step 0, step
  1 when it is stored) of the discovered heads against random sets at every checkpoint, with the study's regression
  (effect ~ log10(step + 1) + target-vs-random) beside the per-checkpoint tests;
* activation patching at the target's tokens (:mod:`lexprobe.stages.patching`): per checkpoint of the map,
  noising (necessity) and denoising (sufficiency) of every head and layer against a counterfactual set, their maps
  across development, the exactness controls, and the greedy sufficient sets (redundancy);
* exactness: with every target->cue edge cut, the target's embeddings of a noun's sentences must be identical
  whenever the sentences differ only in a cue of equal token length (pair distances at most ``EXACT``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from lexprobe.analysis import nulls, patchmaps
from lexprobe.analysis.nulls import RANK_RESOLVES
from lexprobe.analysis.performance import with_pairs
from lexprobe.analysis.primitives import at_last_checkpoint
from lexprobe.analysis.selection import ALPHA
from lexprobe.base.progress import tqdm
from lexprobe.base.view import Block, Figure, Heading, Table, Text, View
from lexprobe.checkpoints.suites import load_tokenizer, log_subset
from lexprobe.engine.interventions import (
    EdgeKnockout,
    HeadAblation,
    Intervention,
    NoOp,
    intervention_of,
    random_head_sets,
)
from lexprobe.engine.patches import PatchMap
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.patching import RECOVER, counterfactual_of, patch_design, patch_table, redundancy
from lexprobe.stages.registry import Context, Prepared, Reads
from lexprobe.stimuli.align import encode
from lexprobe.stimuli.tables import Stimuli
from lexprobe.sweep.run import extract

METHODS = ("zero", "mean", "resample", "knockout", "qk-zero", "qk-copy")
DEVELOPMENT = ("zero", "qk-zero", "qk-copy")  # methods measured at every checkpoint (the rest at the last)
EXACT = 1e-5


@dataclass
class Causal:
    """Causal tests: design, best-layer scores per condition, drops, null tests, head map, agreement, controls."""

    design: pd.DataFrame
    best: pd.DataFrame
    drops: pd.DataFrame
    tests: pd.DataFrame
    onset_of_effect: pd.DataFrame
    causal_map: pd.DataFrame
    agreement: pd.DataFrame
    controls: pd.DataFrame
    exactness: pd.DataFrame
    regression: pd.DataFrame
    counterfactual: Stimuli
    patches: pd.DataFrame
    patch_maps: pd.DataFrame
    patch_exactness: pd.DataFrame
    patch_first: pd.DataFrame
    patch_agreement: pd.DataFrame
    greedy_curve: pd.DataFrame
    greedy_tests: pd.DataFrame


def copy_source(steps: tuple[int, ...]) -> int | None:
    """The checkpoint ``qk-copy`` copies Q and K from: step 1, else the earliest stored step after 0 (None if none)."""
    later = [s for s in steps if s > 0]
    return 1 if 1 in steps else (min(later) if later else None)


def design(stats: pd.DataFrame, n_layers: int, n_heads: int, n_random: int, n_random_dev: int,
           methods: tuple[str, ...] = METHODS, layer_matched: bool = False, seed: int = 0,
           source_step: int | None = None, counterfactual: Stimuli | None = None) -> pd.DataFrame:
    """One row per (model, seed, condition): the intervention, its family and role, and where it is measured
    (``scope`` last | all | map | patch). ``qk-copy`` copies from ``source_step`` (left out when None); a
    ``counterfactual`` set adds one patch map per (model, seed) (family ``patch``, scope ``patch``)."""
    rows = []

    def add(model: str, sd: int, iv: Intervention, family: str, role: str, draw: int, scope: str) -> None:
        heads = () if isinstance(iv, NoOp) else iv.head_set()
        rows.append({"model": model, "seed": sd, "condition": iv.condition, "intervention": iv, "family": family,
                     "role": role, "draw": draw, "scope": scope, "heads": heads,
                     "n_heads": n_layers * n_heads if heads is None else len(heads), "source_step": iv.donor_step})

    methods = tuple(m for m in methods if m != "qk-copy" or source_step is not None)
    patch_map = None if counterfactual is None else PatchMap(counterfactual, patch_design(n_layers, n_heads))
    for (model, sd), st in stats.groupby(["model", "seed"]):
        target = tuple(sorted((int(r.layer), int(r.head)) for r in st.itertuples() if r.passes))
        add(model, sd, NoOp(), "noop", "control", 0, "last")
        add(model, sd, EdgeKnockout(None), "edges", "target", 0, "last")
        for k in range(n_random):
            add(model, sd, EdgeKnockout(None, edges="random", seed=k), "edges", "random", k, "last")
        for layer in range(n_layers):
            for head in range(n_heads):
                add(model, sd, HeadAblation(((layer, head),)), "single", "single", 0, "map")
        if patch_map is not None:
            add(model, sd, patch_map, "patch", "map", 0, "patch")
        if not target:
            continue
        sets = random_head_sets(n_layers, n_heads, target, len(target), max(n_random, n_random_dev),
                                seed=seed + int(sd), layer_matched=layer_matched)
        for method in methods:
            dev = method in DEVELOPMENT
            iv = intervention_of(method, target, seed, source_step)
            assert iv is not None  # a method on a non-empty head set ("none" is no method)
            add(model, sd, iv, method, "target", 0, "all" if dev else "last")
            n_sets = max(n_random, n_random_dev) if dev else n_random
            for k, heads in enumerate(sets[:n_sets]):
                iv = intervention_of(method, heads, seed + k, source_step)
                assert iv is not None  # as above: random sets are as large as the target
                add(model, sd, iv, method, "random", k, "all" if dev and k < n_random_dev else "last")
    return pd.DataFrame(rows)


def exactness(stage1: Inflection, pairs: pd.DataFrame, condition: str) -> pd.DataFrame:
    """Per (model, seed): the largest pair distance (any layer) under the all-edge knockout, over nouns whose
    sentences differ only in cues of equal token length; and the nouns left out."""
    suite, stim = stage1.suite, stage1.stimuli
    rows = []
    for (model, sd), g in pairs[pairs["condition"] == condition].groupby(["model", "seed"]):
        step = int(g["step"].max())
        tok = load_tokenizer(suite.checkpoint(model, sd, step))
        enc = encode(tok, stim.sentences)
        sents = stim.sentences.assign(
            frame=[tuple(int(t) for t, c in zip(ids[: int(n)], cm[: int(n)]) if not c)
                   for ids, cm, n in zip(enc.input_ids, enc.cue_mask, enc.lengths)],
            n_cue=enc.cue_mask.sum(1).numpy())
        same = sents.groupby("word").apply(lambda w: w["frame"].nunique() == 1 and w["n_cue"].nunique() == 1,
                                           include_groups=False)
        ok = set(same[same].index)
        at = g[(g["step"] == step) & g["word"].isin(ok)]
        rows.append({"model": model, "seed": sd, "step": step, "nouns_checked": len(ok),
                     "nouns_left_out": len(same) - len(ok), "left_out": " ".join(sorted(set(same.index) - ok)),
                     "max_distance": float(at["distance"].abs().max()),
                     "exact": bool(at["distance"].abs().max() <= EXACT)})
    return pd.DataFrame(rows)


def design_for(stage2: Discovery, n_random: int = 100, n_random_dev: int = 10, methods: tuple[str, ...] = METHODS,
               layer_matched: bool = False, seed: int = 0, source_step: int | None = None,
               counterfactual: Stimuli | None = None) -> pd.DataFrame:
    """Stage 4's :func:`design` for the heads that pass a finished stage 2."""
    stats = stage2.stats
    n_layers, n_heads = int(stats["layer"].max()) + 1, int(stats["head"].max()) + 1
    return design(stats, n_layers, n_heads, n_random, n_random_dev, methods, layer_matched, seed, source_step,
                  counterfactual)


def measured_conditions(plan: pd.DataFrame, steps: tuple[int, ...],
                        map_steps: int = 0) -> Iterator[tuple[str, int, tuple[int, ...], pd.DataFrame]]:
    """Per (model, seed) and scope: the checkpoints and the design rows measured there (``last``: the last
    checkpoint; ``all``: every one; ``map`` and ``patch``: about ``map_steps`` log-spaced ones, 0: every one)."""
    map_at = log_subset(steps, map_steps) if map_steps else steps
    for (model, sd), g in plan.groupby(["model", "seed"]):
        for scope, chosen in (("last", steps[-1:]), ("all", steps), ("map", map_at), ("patch", map_at)):
            yield str(model), int(sd), chosen, g[g["scope"] == scope]


class CausalStage:
    """Stage 4: design, measure (cached in the study's results store) and test the interventions of
    :func:`design` on the checkpoints of a finished inflection stage, best layers chosen by the study's scoring
    rule: ``n_random`` random sets per null at the last checkpoint, ``n_random_dev`` at every checkpoint, the
    single-head and patch maps at about ``map_steps`` log-spaced checkpoints (0: every one); patching against the
    study's ``counterfactual`` (default: :func:`counterfactual_of`, kept in the stage cache), the greedy sufficient
    sets at about ``redundancy_steps`` log-spaced checkpoints."""

    name, title, result = "causal", "Are the heads causally necessary?", Causal
    needs = ("inflection", "discovery")
    reads = ("n_random", "n_random_dev", "map_steps", "layer_matched", "n_boot", "seed", "methods",
             "redundancy_steps", "counterfactual")
    given: tuple[str, ...] = ()

    def given_values(self, study: Context) -> dict[str, Any]:
        return {}

    def prepare(self, study: Context, earlier: dict[str, Any]) -> Prepared:
        s1: Inflection = earlier["inflection"]
        s2: Discovery = earlier["discovery"]
        cf = study.counterfactual if study.counterfactual is not None else study.derived(
            "causal-counterfactual", s1.steps[-1], lambda: {"neutral": counterfactual_of(s1)})["neutral"]
        plan = design_for(s2, study.n_random, study.n_random_dev, study.methods, study.layer_matched, study.seed,
                          copy_source(s1.suite.steps), cf)
        reads = [Reads("distances", s1.stimuli.name, tuple(rows["condition"]), steps, (model,), (sd,))
                 for model, sd, steps, rows in measured_conditions(plan, s1.steps, study.map_steps)]
        return Prepared(reads, inputs={"counterfactual": cf.hash,  # the greedy search stores no units
                                       "redundancy_at": list(log_subset(s1.steps, study.redundancy_steps))},
                        data={"design": plan, "counterfactual": cf})

    def run(self, study: Context, earlier: dict[str, Any], prepared: Prepared) -> Causal:
        s1: Inflection = earlier["inflection"]
        s2: Discovery = earlier["discovery"]
        suite, stim, steps, scoring = study.checkpoint_suite, s1.stimuli, s1.steps, study.scoring
        plan, cf = prepared.data["design"], prepared.data["counterfactual"]
        n_boot, seed = study.n_boot, study.seed
        cfg = replace(study.config, save_embeddings=False, save_heads=False)
        for model, sd, chosen, rows in tqdm(list(measured_conditions(plan, steps, study.map_steps)),
                                            desc="stage 4: seeds x scopes", disable=not study.progress):
            if len(rows):
                extract(suite, stim, chosen, models=(model,), seeds=(sd,), root=study.store.root, config=cfg,
                        interventions=list(rows["intervention"]), progress=study.progress)
        conds = ["intact", *plan["condition"].unique()]
        dist = study.store.load("distances", suite=suite.name, stimuli=stim.name, condition=conds, step=list(steps),
                                model=list(plan["model"].unique()), seed=[int(s) for s in plan["seed"].unique()])
        patch_cond = set(plan.loc[plan["family"] == "patch", "condition"])
        patched = dist[dist["condition"].isin(patch_cond)]
        dist = dist[~dist["condition"].isin(patch_cond)]
        if "patch" in dist.columns:
            dist = dist.drop(columns="patch")
        pairs = with_pairs(dist, stim)
        best = scoring.best(pairs)
        dr = nulls.drops(best)
        key = plan.drop(columns=["intervention", "model", "seed"]).drop_duplicates("condition")
        tests = nulls.null_tests(dr, key)
        singles = key.loc[key["role"] == "single", "condition"]
        map_pairs = scoring.layers(pairs[pairs["condition"].isin(["intact", *singles])])
        cmap = nulls.causal_map(map_pairs, key, target=scoring.target, n_boot=n_boot, seed=seed, by=scoring.by)
        controls = dr.merge(key[key["family"].isin(["noop"])][["condition", "family"]], on="condition")
        n_layers, n_heads = int(s2.stats["layer"].max()) + 1, int(s2.stats["head"].max()) + 1
        ptab = patch_table(patch_design(n_layers, n_heads), n_heads)
        maps, pexact, pfirst, pagree = patching_results(s1, s2, patched, pairs, ptab, n_boot, seed)
        curve, greedy = redundancy(s1, cf, study.n_random, study.redundancy_steps, seed=seed, config=study.config,
                                   progress=study.progress)
        return Causal(plan.drop(columns=["intervention"]), best, dr, tests,
                      nulls.first_significant(tests[tests["family"] == "zero"]), cmap,
                      nulls.agreement(cmap, s2.stats, step=steps[-1]), controls,
                      exactness(s1, pairs, EdgeKnockout(None).condition),
                      nulls.study_regression(dr, key, DEVELOPMENT), cf, ptab, maps, pexact, pfirst, pagree, curve,
                      greedy)


STAGE = CausalStage()


def patching_results(stage1: Inflection, stage2: Discovery, patched: pd.DataFrame, pairs: pd.DataFrame,
                     ptab: pd.DataFrame, n_boot: int, seed: int
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The patch maps, their exactness controls, each head's first significant checkpoint and the agreement of the
    last checkpoint's necessary and sufficient heads with discovery."""
    ppairs = with_pairs(patched.assign(condition=patched["patch"]).drop(columns="patch"), stage1.stimuli)
    intact = pairs[(pairs["condition"] == "intact") & pairs["step"].isin(ppairs["step"].unique())
                   & pairs["pair_id"].isin(ppairs["pair_id"].unique())]
    scoring = stage1.scoring
    ppairs, intact = scoring.layers(ppairs), scoring.layers(intact)
    maps = patchmaps.patch_maps(ppairs, ptab, target=scoring.target, n_boot=n_boot, seed=seed, by=scoring.by)
    best = stage1.best_of(pd.concat([ppairs, intact]))
    exact = patchmaps.patch_exactness(ppairs, intact, best)
    agree = pd.concat([nulls.agreement(maps[(maps["unit"] == "head") & (maps["direction"] == d)], stage2.stats)
                       .assign(direction=d) for d in ("noise", "denoise")], ignore_index=True) if len(maps) else maps
    return maps, exact, patchmaps.first_patched(maps), agree


def _onset(inflection: pd.DataFrame | None, model: str, seed: int) -> str:
    """Stage 1's inflection onset of (model, seed) as words ('' without stage 1's table or its row)."""
    if inflection is None:
        return ""
    o = inflection.loc[(inflection["model"] == model) & (inflection["seed"] == seed), "onset_step"]
    if o.empty:
        return ""
    return f"inflection onset {float(o.iloc[0]):.0f}" if pd.notna(o.iloc[0]) else "no inflection onset"


def describe(s4: Causal, inflection: pd.DataFrame | None = None) -> View:
    """Stage 4's view: ablation of the discovered heads against random sets (when its effect appears), the causal
    head map, controls, exactness, the original study's QK edits and activation patching; ``inflection``: stage 1's
    table (columns model, seed, onset_step) to set the effects' first steps beside."""
    tests, cm = s4.tests, s4.causal_map
    blocks: list[Block] = [Text("drop = intact best-layer R^2 - intervened; > 0 hurts", note=True)]
    if (tests["family"] == "zero").any():
        blocks.append(Figure("ablation_chart", {"tests": tests},
                             "zero ablation of the discovered heads across training", "ablation"))
    else:
        blocks.append(Text("No seed has heads that pass discovery: there is no discovered set to ablate.", note=True))
    for r in s4.onset_of_effect.itertuples():
        when = (f"from step {r.effect_from_step:.0f} on" if pd.notna(r.effect_from_step)
                else "at no step (not even at the last checkpoint)")
        on = _onset(inflection, r.model, r.seed)
        blocks.append(Text(f"seed {r.seed}: zero-ablating the discovered heads beats its null {when}"
                           f"{'; ' + on if on else ''}"))
    dev = tests[tests["family"] == "zero"]
    if not dev.empty:
        blocks.append(Text(f"Each checkpoint at alpha {ALPHA}; p by {', '.join(sorted(dev['method'].unique()))}: a "
                           f"rank against n random sets cannot go below 1/(n+1) = {dev['p_floor'].max():.3g} with the "
                           f"fewest sets, so where that floor is above {RANK_RESOLVES:.3g} the t prediction test is "
                           "used.", note=True))
    blocks.append(Figure("causal_map_chart", {"cmap": cm}, "causal head map (single-head ablation)", "causal-map"))
    if len(cm):
        size = int(cm["fdr_family_size"].max())
        blocks += [Text(f"Causal head map: paired item bootstrap of each head's R² drop, one-sided "
                        f"normal-approximation p from the bootstrap standard error, BH-FDR over "
                        f"{cm['fdr_family'].iloc[0]} (m = {size}). "
                        "Null tests of head sets: a rank against the random sets where its floor 1/(n+1) resolves "
                        "alpha, else a t prediction test (column method).", note=True),
                   Text(f"A lone cell of the causal head map needs p <= {ALPHA / size:.2g}.", note=True)]
    blocks += [
        Table(at_last_checkpoint(tests), "Null tests at the last checkpoint (drop in R²; p vs random sets)"),
        Table(s4.controls[["model", "seed", "step", "condition", "drop_r2"]], "No-op control (drop must be 0)"),
        Text(f"Exactness: every target->cue edge cut in every head, on the nouns whose sentences differ only in an "
             f"equal-length cue; the largest pair distance must be at most {EXACT:g}.", note=True),
        Table(s4.exactness, "Exactness: every target→cue edge cut"),
        Table(s4.agreement, "Causal map vs discovery at the last checkpoint"),
        *_qk(s4), *_patching(s4, inflection)]
    return View(f"Stage 4 · {STAGE.title}", "stage4", tuple(blocks))


def _qk(s4: Causal) -> list[Block]:
    """The original study's QK edits: where qk-copy copies from, per seed how often the edit beats its null, the
    chart and the study's regression across development."""
    src = s4.design.loc[s4.design["family"] == "qk-copy", "source_step"]
    blocks: list[Block] = [Text(f"QK edits of the discovered heads (the original study's test) vs random same-size "
                                f"sets: qk-copy copies Q and K from step {int(src.iloc[0])} (step 1 when it is stored, "
                                "else the earliest stored checkpoint after step 0).", note=True)] if len(src) else []
    t = s4.tests[s4.tests["family"].isin(["qk-zero", "qk-copy"])]
    for (family, sd), g in t.groupby(["family", "seed"]):
        last = g.sort_values("step").iloc[-1]
        blocks.append(Text(f"seed {sd} {family}: at the last checkpoint drop {last.drop_r2:.4f} vs random "
                           f"({last.n_random}) mean {last.null_mean:.4f}, p = {last.p:.3g} ({last.method}); beats its "
                           f"null at {int((g['p'] < ALPHA).sum())} of {len(g)} checkpoints"))
    if len(t):
        blocks.append(Figure("ablation_chart", {"tests": s4.tests, "family": "qk-copy"}, "QK rows of the discovered "
                             "heads copied from the earliest checkpoint after step 0, across training, against random "
                             "sets", "qk-edit"))
    if len(s4.regression):
        blocks.append(Table(s4.regression, "The original study's regression: drop ~ log10(step + 1) + "
                                           "target-vs-random"))
    return blocks


def _heads(g: pd.DataFrame) -> str:
    return " ".join(f"L{r.layer}H{r.head}" for r in g.itertuples() if r.significant) or "-"


def _firsts(first: pd.DataFrame) -> str:
    got = first.dropna(subset=["first_step"]).sort_values(["first_step", "layer", "head"])
    return ", ".join(f"L{r.layer}H{r.head}@{r.first_step:.0f}" for r in got.itertuples()) or "-"


def _patching(s4: Causal, inflection: pd.DataFrame | None) -> list[Block]:
    """Activation patching: the necessity and sufficiency maps, the last checkpoint's necessary and sufficient heads,
    the exactness controls, agreement with discovery, when each head first becomes necessary / sufficient (beside the
    inflection onset), the greedy sufficient sets."""
    cf, maps = s4.counterfactual, s4.patch_maps
    blocks: list[Block] = [
        Heading("Activation patching: necessity and sufficiency at the noun", "patching"),
        Text(f"Counterfactual: {cf.name} ({len(cf.sentences)} sentences, each cue replaced by a sense-neutral modifier "
             "in its place; the noun's tokens matched by role). Noising replaces one head's output at the noun by its "
             "counterfactual output (necessity: drop in R²); denoising restores it in the counterfactual run "
             "(sufficiency: share of the clean R² above the counterfactual recovered).", note=True)]
    if maps.empty:
        return blocks
    blocks += [Figure("patch_map_chart", {"maps": maps, "direction": "noise"}, "necessity map (noising)",
                      "necessity-map"),
               Figure("patch_map_chart", {"maps": maps, "direction": "denoise"}, "sufficiency map (denoising)",
                      "sufficiency-map"),
               Text(f"Both maps: paired item bootstrap, normal-approximation p, BH-FDR over "
                    f"{maps['fdr_family'].iloc[0]} (m = {int(maps['fdr_family_size'].max())}).", note=True)]
    for sd, g in at_last_checkpoint(maps[maps["unit"] == "head"]).groupby("seed"):
        nec, suf = g[g["direction"] == "noise"], g[g["direction"] == "denoise"]
        r = g.iloc[0]
        base = " (counterfactual distances constant: baseline R^2 0)" if r.baseline_constant else ""
        extra = sorted({(x.layer, x.head) for x in suf.itertuples() if x.significant}
                       - {(x.layer, x.head) for x in nec.itertuples() if x.significant})
        found = f"; sufficiency finds heads necessity missed: {' '.join(f'L{l}H{h}' for l, h in extra)}"
        blocks.append(Text(f"seed {sd} step {r.step}: clean R^2 {r.r2_clean:.3f}, counterfactual "
                           f"{r.r2_counterfactual:.3f}{base}; necessary: {_heads(nec)}; sufficient: {_heads(suf)}"
                           f"{found if extra else ''}"))
    blocks += [Table(s4.patch_exactness, "Exactness controls (max abs differences; must be at most 1e-6)"),
               Table(s4.patch_agreement, "Necessary (noise) and sufficient (denoise) heads at the last checkpoint vs "
                     "discovery"),
               Table(s4.patch_first.dropna(subset=["first_step"]),
                     "First checkpoint at which each head is significant")]
    for (model, sd), g in s4.patch_first.groupby(["model", "seed"]):
        on = _onset(inflection, model, sd)
        blocks.append(Text(f"seed {sd}: {on + '; ' if on else ''}first significant step, necessity: "
                           f"{_firsts(g[g['direction'] == 'noise'])}; sufficiency: "
                           f"{_firsts(g[g['direction'] == 'denoise'])}"))
    if len(s4.greedy_curve):
        blocks.append(Figure("recovery_chart", {"curve": s4.greedy_curve}, "greedy sufficient sets: recovery curves",
                             "recovery"))
    blocks.append(Text(f"Greedy sufficient sets: joint denoising until {RECOVER:.0%} of the clean R^2 above the "
                       "counterfactual is recovered; the set is chosen on these pairs, so its recovery against random "
                       "same-size sets is descriptive, not a test.", note=True))
    for r in s4.greedy_tests[s4.greedy_tests["size"] > 0].itertuples():
        curve = s4.greedy_curve[(s4.greedy_curve["seed"] == r.seed) & (s4.greedy_curve["step"] == r.step)]
        blocks.append(Text(f"seed {r.seed} step {r.step}: greedy curve "
                           f"{', '.join(f'+{c.added} {c.recovered:.2f}' for c in curve.itertuples())}"))
    blocks.append(Table(s4.greedy_tests, "Greedy sets against random same-size sets, and how they work (OR / AND)"))
    return blocks
