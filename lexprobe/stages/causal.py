"""Stage 4 runner and report: are the heads found by discovery causally necessary for disambiguation?

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

import pandas as pd

from lexprobe.analysis import nulls, patchmaps
from lexprobe.analysis.nulls import MAP_FAMILY, RANK_RESOLVES
from lexprobe.analysis.performance import with_pairs
from lexprobe.analysis.primitives import at_last_checkpoint
from lexprobe.analysis.selection import ALPHA
from lexprobe.base.progress import tqdm
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


def causal_stage(stage1: Inflection, stage2: Discovery, n_random: int = 100, n_random_dev: int = 10,
                 methods: tuple[str, ...] = METHODS, layer_matched: bool = False, map_steps: int = 0,
                 n_boot: int = 200, seed: int = 0, progress: bool = True,
                 counterfactual: Stimuli | None = None, redundancy_steps: int = 4) -> Causal:
    """Design, measure (cached in stage 1's results store) and test stage 4 on the checkpoints of a finished
    inflection stage, best layers chosen by stage 1's rule: ``n_random`` random sets per null at the last
    checkpoint, ``n_random_dev`` at every checkpoint, the single-head and patch maps at about ``map_steps``
    log-spaced checkpoints (0: every one); patching against ``counterfactual`` (default: :func:`counterfactual_of`),
    the greedy sufficient sets at about ``redundancy_steps`` log-spaced checkpoints."""
    suite, stim, steps = stage1.suite, stage1.stimuli, stage1.steps
    cf = counterfactual if counterfactual is not None else counterfactual_of(stage1)
    plan = design_for(stage2, n_random, n_random_dev, methods, layer_matched, seed, copy_source(suite.steps), cf)
    cfg = replace(stage1.config, save_embeddings=False, save_heads=False)
    for model, sd, chosen, rows in tqdm(list(measured_conditions(plan, steps, map_steps)),
                                        desc="stage 4: seeds x scopes", disable=not progress):
        if len(rows):
            extract(suite, stim, chosen, models=(model,), seeds=(sd,), root=stage1.root, config=cfg,
                    interventions=list(rows["intervention"]), progress=progress)
    conds = ["intact", *plan["condition"].unique()]
    dist = stage1.store.load("distances", suite=suite.name, stimuli=stim.name, condition=conds, step=list(steps),
                             model=list(plan["model"].unique()), seed=[int(s) for s in plan["seed"].unique()])
    patch_cond = set(plan.loc[plan["family"] == "patch", "condition"])
    patched = dist[dist["condition"].isin(patch_cond)]
    dist = dist[~dist["condition"].isin(patch_cond)]
    if "patch" in dist.columns:
        dist = dist.drop(columns="patch")
    pairs = with_pairs(dist, stim)
    best = stage1.best_of(pairs)
    dr = nulls.drops(best)
    key = plan.drop(columns=["intervention", "model", "seed"]).drop_duplicates("condition")
    tests = nulls.null_tests(dr, key)
    singles = key.loc[key["role"] == "single", "condition"]
    map_pairs = pairs[pairs["condition"].isin(["intact", *singles])]
    if stage1.exclude_embedding:
        map_pairs = map_pairs[map_pairs["layer"] > 0]
    cmap = nulls.causal_map(map_pairs, key, target=stage1.target, n_boot=n_boot, seed=seed, by=stage1.by)
    controls = dr.merge(key[key["family"].isin(["noop"])][["condition", "family"]], on="condition")
    n_layers, n_heads = int(stage2.stats["layer"].max()) + 1, int(stage2.stats["head"].max()) + 1
    ptab = patch_table(patch_design(n_layers, n_heads), n_heads)
    maps, pexact, pfirst, pagree = patching_results(stage1, stage2, patched, pairs, ptab, n_boot, seed)
    curve, greedy = redundancy(stage1, cf, n_random, redundancy_steps, seed, progress)
    return Causal(plan.drop(columns=["intervention"]), best, dr, tests,
                  nulls.first_significant(tests[tests["family"] == "zero"]), cmap,
                  nulls.agreement(cmap, stage2.stats, step=steps[-1]), controls,
                  exactness(stage1, pairs, EdgeKnockout(None).condition),
                  nulls.study_regression(dr, key, DEVELOPMENT), cf, ptab, maps, pexact, pfirst, pagree, curve,
                  greedy)


def patching_results(stage1: Inflection, stage2: Discovery, patched: pd.DataFrame, pairs: pd.DataFrame,
                     ptab: pd.DataFrame, n_boot: int, seed: int
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The patch maps, their exactness controls, each head's first significant checkpoint and the agreement of the
    last checkpoint's necessary and sufficient heads with discovery."""
    ppairs = with_pairs(patched.assign(condition=patched["patch"]).drop(columns="patch"), stage1.stimuli)
    intact = pairs[(pairs["condition"] == "intact") & pairs["step"].isin(ppairs["step"].unique())
                   & pairs["pair_id"].isin(ppairs["pair_id"].unique())]
    if stage1.exclude_embedding:
        ppairs, intact = ppairs[ppairs["layer"] > 0], intact[intact["layer"] > 0]
    maps = patchmaps.patch_maps(ppairs, ptab, target=stage1.target, n_boot=n_boot, seed=seed, by=stage1.by)
    best = stage1.best_of(pd.concat([ppairs, intact]))
    exact = patchmaps.patch_exactness(ppairs, intact, best)
    agree = pd.concat([nulls.agreement(maps[(maps["unit"] == "head") & (maps["direction"] == d)], stage2.stats)
                       .assign(direction=d) for d in ("noise", "denoise")], ignore_index=True) if len(maps) else maps
    return maps, exact, patchmaps.first_patched(maps), agree


def causal_report(s4: Causal, onset: pd.DataFrame | None = None) -> str:
    """Plain-text stage 4 (what ``lexprobe causal`` prints); ``onset``: columns model, seed, onset_step
    (the inflection onset of stage 1) to set the effect's first step beside."""
    lines = ["stage 4: causal interventions (drop = intact best-layer R^2 - intervened; > 0 hurts)", ""]
    ex = s4.exactness
    lines.append("exactness: every target->cue edge cut in every head; nouns whose sentences differ only in an "
                 "equal-length cue")
    for r in ex.itertuples():
        lines.append(f"  seed {r.seed} step {r.step}: {r.nouns_checked} nouns checked ({r.nouns_left_out} left out), "
                     f"max pair distance {r.max_distance:.2e} (<= {EXACT:g}: {'yes' if r.exact else 'NO'})")
    lines.append("")
    lines.append("controls at the last checkpoint:")
    for r in s4.controls.itertuples():
        lines.append(f"  seed {r.seed}: no-op drop in R^2 = {r.drop_r2:.3g} (must be exactly 0)")
    last = at_last_checkpoint(s4.tests)
    for r in last[last["family"] == "edges"].itertuples():
        lines.append(f"  seed {r.seed}: target->cue edges cut in every head: drop {r.drop_r2:.4f}; random earlier "
                     f"non-cue edges ({r.n_random} draws): mean {r.null_mean:.4f}, 95% {r.null_q95:.4f}; p = {r.p:.3g} "
                     f"({r.method})")
    lines.append("")
    lines.append("discovered heads vs random same-size head sets at the last checkpoint:")
    tab = last[~last["family"].isin(["edges"])]
    if tab.empty:
        lines.append("  (no seed has heads that pass discovery)")
    for r in tab.sort_values(["seed", "family"]).itertuples():
        lines.append(f"  seed {r.seed} {r.family:>9}: drop {r.drop_r2:7.4f}  random ({r.n_random}): mean "
                     f"{r.null_mean:7.4f}, 95% {r.null_q95:7.4f}  p = {r.p:.3g} ({r.method})  z = {r.z:.2f}")
    lines.append("")
    for r in s4.onset_of_effect.itertuples():
        on = ""
        if onset is not None and not onset.empty:
            o = onset[(onset["model"] == r.model) & (onset["seed"] == r.seed)]
            on = f"; inflection onset {float(o['onset_step'].iloc[0]):.0f}" if len(o) else ""
        when = (f"from step {r.effect_from_step:.0f} on" if pd.notna(r.effect_from_step)
                else "at no step (not even at the last checkpoint)")
        lines.append(f"seed {r.seed}: zero-ablating the discovered heads beats its null {when}{on}")
    dev = s4.tests[(s4.tests["family"] == "zero")]
    if not dev.empty:
        lines.append(f"  (each checkpoint at alpha {ALPHA}; p by {', '.join(sorted(dev['method'].unique()))}: a rank "
                     f"against n random sets cannot go below 1/(n+1) = {dev['p_floor'].max():.3g} with the fewest "
                     f"sets, so where that floor is above {RANK_RESOLVES:.3g} the t prediction test is used)")
    lines += qk_lines(s4)
    lines.append("")
    cm = s4.causal_map
    size = int(cm["fdr_family_size"].max()) if len(cm) else 0
    lines.append(f"causal head map (single-head zero ablation, paired item bootstrap, normal-approximation p; BH-FDR "
                 f"over {MAP_FAMILY}: m = {size}, so a lone cell needs p <= {ALPHA / max(size, 1):.2g}):")
    for r in s4.agreement.itertuples():
        lines.append(f"  seed {r.seed} step {r.step}: causal {r.causal_heads or '-'} | discovered "
                     f"{r.discovered_heads or '-'} | both {r.both}, Jaccard {r.jaccard:.2f}, Fisher p {r.fisher_p:.3g}")
    lines += patching_lines(s4, onset)
    return "\n".join(lines)


def qk_lines(s4: Causal) -> list[str]:
    """The original study's QK edits: the last checkpoint's tests and the regression across development."""
    lines = ["", "QK edits of the discovered heads (the original study's test) vs random same-size sets:"]
    src = s4.design.loc[s4.design["family"] == "qk-copy", "source_step"]
    if len(src):
        lines.append(f"  qk-copy copies Q and K from step {int(src.iloc[0])} (step 1 when it is stored, else the "
                     "earliest stored checkpoint after step 0)")
    t = s4.tests[s4.tests["family"].isin(["qk-zero", "qk-copy"])]
    if t.empty:
        lines.append("  (no seed has heads that pass discovery)")
        return lines
    for (family, sd), g in t.groupby(["family", "seed"]):
        beat = g[g["p"] < ALPHA]["step"]
        last = g.sort_values("step").iloc[-1]
        lines.append(f"  seed {sd} {family}: at the last checkpoint drop {last.drop_r2:.4f} vs random "
                     f"({last.n_random}) mean {last.null_mean:.4f}, p = {last.p:.3g} ({last.method}); beats its "
                     f"null at {len(beat)} of {len(g)} checkpoints")
    for r in s4.regression.itertuples():
        lines.append(f"  seed {r.seed} {r.family}: drop ~ log10(step+1) + target over {r.n_steps} checkpoints "
                     f"(n = {r.n}): target {r.target_coef:+.4f} [{r.target_low:+.4f}, {r.target_high:+.4f}], "
                     f"p = {r.target_p:.3g}")
    return lines


def _heads(g: pd.DataFrame) -> str:
    return " ".join(f"L{r.layer}H{r.head}" for r in g.itertuples() if r.significant) or "-"


def _firsts(first: pd.DataFrame) -> str:
    got = first.dropna(subset=["first_step"]).sort_values(["first_step", "layer", "head"])
    return ", ".join(f"L{r.layer}H{r.head}@{r.first_step:.0f}" for r in got.itertuples()) or "-"


def patching_lines(s4: Causal, onset: pd.DataFrame | None = None) -> list[str]:
    """Activation patching: exactness controls, the last checkpoint's necessary and sufficient heads, agreement with
    discovery, when each head first becomes necessary / sufficient beside the inflection onset, the greedy sets."""
    cf = s4.counterfactual
    lines = ["", f"activation patching at the target's tokens against the counterfactual {cf.name!r} "
             f"({len(cf.sentences)} sentences; necessity: drop of R^2 when a head's output there is noised from the "
             "counterfactual; sufficiency: share of the clean R^2 above the counterfactual run that restoring it "
             "recovers)"]
    ex = s4.patch_exactness
    if len(ex):
        worst = ex.filter(like="_distance").max().max()
        worst_r2 = ex.filter(like="_r2").max().max()
        lines.append(f"  exactness controls at {len(ex)} (seed, checkpoint)s: denoising every head = clean run, "
                     f"noising every head = counterfactual run, no patch = the engine's intact run: max |pair "
                     f"distance| diff {worst:.2e}, max |R^2| diff {worst_r2:.2e} (<= {patchmaps.EXACT_PATCH:g}: "
                     f"{'yes' if bool(ex['exact'].all()) else 'NO'})")
    maps = s4.patch_maps
    if maps.empty:
        return lines
    size = int(maps.loc[maps["unit"] == "head", "fdr_family_size"].max())
    lines.append(f"  BH-FDR over {patchmaps.PATCH_FAMILY}: m = {size}; p from the bootstrap's normal approximation")
    last = at_last_checkpoint(maps[maps["unit"] == "head"])
    for sd, g in last.groupby("seed"):
        nec, suf = g[g["direction"] == "noise"], g[g["direction"] == "denoise"]
        r = g.iloc[0]
        base = " (counterfactual distances constant: baseline R^2 0)" if r.baseline_constant else ""
        lines.append(f"  seed {sd} step {r.step}: clean R^2 {r.r2_clean:.3f}, counterfactual {r.r2_counterfactual:.3f}"
                     f"{base}; necessary: {_heads(nec)}; sufficient: {_heads(suf)}")
        extra = {(x.layer, x.head) for x in suf.itertuples() if x.significant} - \
            {(x.layer, x.head) for x in nec.itertuples() if x.significant}
        if extra:
            lines.append(f"    sufficiency finds heads necessity missed: "
                         f"{' '.join(f'L{l}H{h}' for l, h in sorted(extra))}")
    for r in s4.patch_agreement.itertuples():
        what = "necessary" if r.direction == "noise" else "sufficient"
        lines.append(f"  seed {r.seed}: discovered heads ({r.discovered_heads or '-'}) among the {what} ones: "
                     f"{r.both} of {r.discovered} ({r.causal} {what}), Fisher p {r.fisher_p:.3g}")
    for sd, g in s4.patch_first.groupby("seed"):
        on = ""
        if onset is not None and not onset.empty and (onset["seed"] == sd).any():
            on = f"inflection onset {float(onset.loc[onset['seed'] == sd, 'onset_step'].iloc[0]):.0f}; "
        lines.append(f"  seed {sd}: {on}first significant step, necessity: {_firsts(g[g['direction'] == 'noise'])}; "
                     f"sufficiency: {_firsts(g[g['direction'] == 'denoise'])}")
    lines.append(f"  greedy sufficient sets (joint denoising until {RECOVER:.0%} of the clean R^2 above the "
                 "counterfactual is recovered; the set is chosen on these pairs, so its recovery against random "
                 "same-size sets is descriptive, not a test):")
    for r in s4.greedy_tests.itertuples():
        if not r.size:
            lines.append(f"    seed {r.seed} step {r.step}: clean R^2 {r.r2_clean:.3f} <= counterfactual "
                         f"{r.r2_counterfactual:.3f}: nothing to recover")
            continue
        curve = s4.greedy_curve[(s4.greedy_curve["seed"] == r.seed) & (s4.greedy_curve["step"] == r.step)]
        path = ", ".join(f"+{c.added} {c.recovered:.2f}" for c in curve.itertuples())
        lines.append(f"    seed {r.seed} step {r.step}: {r.set or '-'} ({r.size} heads, recovered {r.recovered:.2f}, "
                     f"{'reached' if r.reached else 'NOT reached'}); curve {path}")
        lines.append(f"      vs {r.recovered_n_random:.0f} random sets: recovery p = {r.recovered_p:.3g} "
                     f"({r.recovered_method}); its joint noising removes {r.drop_share:.2f} of R^2, p = "
                     f"{r.drop_p:.3g} ({r.drop_method}); members alone recover {r.single_recovered}, removing one "
                     f"removes {r.single_drop}: {r.reading}")
    return lines
