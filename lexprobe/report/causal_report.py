"""Stage 4 in words: necessity and sufficiency of heads by patching, the greedy sets, the discovered heads'
ablations and QK edits; and its view (the ablation half, then the patching half)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lexprobe.analysis.nulls import RANK_RESOLVES, REGRESSION_DRAWS, beats_null_after_onset
from lexprobe.analysis.patchmaps import EXACT_PATCH
from lexprobe.analysis.primitives import at_last_checkpoint
from lexprobe.analysis.selection import ALPHA
from lexprobe.base.heads import head_name, heads_name
from lexprobe.base.view import Block, Figure, Heading, Table, Text, View
from lexprobe.report import Earlier, Report, left_out
from lexprobe.report.findings import Finding, Writer, ground_truth, lead, seeds_in_words
from lexprobe.report.inflection_report import onset_words
from lexprobe.stages.ablation import EXACT, Ablation
from lexprobe.stages.causal import STAGE, Causal
from lexprobe.stages.patching import RECOVER, Patching

M, G, T = "patching.patch_maps", "patching.greedy_tests", "ablation.tests"  # the tables the findings quote
AGREE = "patching.patch_agreement"
FAMILY_WORDS = {"qk-copy": "their query and key rows set back to an early checkpoint, the original study's test",
                "qk-zero": "their query and key rows zeroed", "zero": "their outputs zeroed",
                "mean": "their outputs set to their mean", "resample": "their outputs resampled from other sentences",
                "knockout": "their noun-to-cue edges cut"}
HEADLINE_FAMILY = "qk-copy"  # the original study's test: the abstract states it, whichever way it goes


MAP_METHODS = {"noise": "stage 4 necessity (noising)", "denoise": "stage 4 sufficiency (denoising)"}


def findings(s4: Causal, earlier: Earlier) -> list[Finding]:
    """Necessity and sufficiency of single heads by patching, the greedy sets, and the study's QK edits."""
    w = Writer(s4)
    tests = s4.ablation.tests
    if len(tests):
        last = int(tests["step"].max())
        for family in sorted(tests["family"].unique()):
            g = tests[(tests["family"] == family) & (tests["step"] == last)]
            if g.empty:
                continue
            text = (f"{family} ({FAMILY_WORDS.get(family, 'an edit')}) of the discovered heads at the last "
                    f"checkpoint: median drop in R² "
                    f"{w.num(T, 'drop_r2', 'median', '.3f', family=family, step=last)}; below p = "
                    f"{w.num('=alpha', fmt='g')} "
                    f"against random same-size sets in {w.num(T, 'p', 'below', '.0f', family=family, step=last)}"
                    f" of {w.num(T, 'p', 'rows', '.0f', family=family, step=last)} seeds")
            floor = g["p_floor"].max() if "p_floor" in g else np.nan
            if np.isfinite(floor) and floor > ALPHA:
                text += " (underpowered: too few random sets for a rank test to reach the threshold)"
            w.say(text + ".", headline=family == HEADLINE_FAMILY)
    maps = s4.patching.patch_maps
    if len(maps):
        last = int(maps["step"].max())
        heads = maps[(maps["unit"] == "head") & (maps["step"] == last)]
        for direction, word in (("noise", "necessary (noising)"), ("denoise", "sufficient (denoising)")):
            d = heads[heads["direction"] == direction]
            none = sorted(int(s) for s, g in d.groupby("seed") if not g["significant"].any())
            found = w.num(M, "significant", "count", ".0f", step=last, unit="head", direction=direction)
            agree = s4.patching.patch_agreement
            overlap = (f", {w.num(AGREE, 'both', 'sum', '.0f', direction=direction)} of them heads stage 2 "
                       "discovered" if len(agree) and (agree["direction"] == direction).any() else "")
            w.say(f"Single heads {word} at the last checkpoint after BH-FDR: {found} (head, seed) cases in all"
                  f"{overlap}; none in {seeds_in_words(none)}; {ground_truth(w, MAP_METHODS[direction], 'this map')}.",
                  headline=direction == "noise")
    greedy = s4.patching.greedy_tests
    if len(greedy) and (greedy["size"] > 0).any():
        last = int(greedy["step"].max())
        reached = greedy[(greedy["step"] == last) & greedy["reached"].astype(bool)]
        if len(reached):
            w.say(f"At step {w.num(G, 'step', 'max', '.0f')} the greedy sufficient sets need "
                  f"{w.num(G, 'size', 'min', '.0f', step=last, reached=True)} to "
                  f"{w.num(G, 'size', 'max', '.0f', step=last, reached=True)} heads jointly to reach the "
                  f"recovery target, in {w.num(G, 'seed', 'distinct', '.0f', step=last, reached=True)} "
                  f"of {w.num(G, 'seed', 'distinct', '.0f', step=last)} seeds (chosen on these pairs: "
                  "descriptive, not a test).")
        else:
            w.say(f"At step {w.num(G, 'step', 'max', '.0f')} no greedy set reaches the recovery target.")
    reg = s4.ablation.regression
    if reg is not None and len(reg):
        for family in sorted(reg["family"].unique()):
            alpha = w.num("=alpha", fmt="g")
            seeds = w.num("ablation.regression", "seed", "rows", ".0f", family=family)
            more, less, more_sets, less_sets = (
                w.num("ablation.regression", "seed", "rows", ".0f", family=family, target_coef=(side, 0),
                      **{p: ("<", ALPHA)}) for p in ("target_p", "target_p_sets") for side in (">", "<"))
            w.say(f"Across checkpoints (the original study's regression of the drop on log step and discovered vs "
                  f"random, p from a bootstrap that resamples checkpoints and random sets), {family} of the "
                  f"discovered heads drops R² more than the random sets' average with p < {alpha} in {more} of "
                  f"{seeds} seeds and less in {less}; against single random sets (each set's mean drop over the "
                  f"checkpoints, t prediction), more in {more_sets} and less in {less_sets}.")
    return w.findings



def describe(s4: Causal, earlier: Earlier) -> View:
    """Stage 4's view: the ablation half, then the patching half, the effects' first steps beside stage 1's onsets
    (``earlier["inflection"]``)."""
    inflection = earlier["inflection"].inflection if "inflection" in earlier else None
    return View(f"Stage 4 · {STAGE.title}", "stage4",
                (Text(lead(findings(s4, earlier))), *left_out(s4.parts_skipped),
                 *ablation_blocks(s4.ablation, inflection),
                 *patching_blocks(s4.patching, inflection)))



NO_SET = "No seed has heads that pass discovery: there is no discovered set to ablate."


ZERO_OPT_IN = ("Zero ablation of the discovered heads across training is opt-in (methods zero, mean, resample, "
               "knockout); the default tests them by the QK edits below.")


def ablation_blocks(s4: Ablation, inflection: pd.DataFrame | None) -> list[Block]:
    """The ablation half of stage 4's view: the discovered heads against random sets (when their effect appears),
    the causal head map, controls, exactness and the original study's QK edits; ``inflection``: stage 1's table
    (columns model, seed, onset_step) to set the effects' first steps beside."""
    tests, cm = s4.tests, s4.causal_map
    blocks: list[Block] = [Text("drop = intact best-layer R^2 - intervened; > 0 hurts", note=True)]
    if (tests["family"] == "zero").any():
        blocks.append(Figure("ablation_chart", {"tests": tests},
                             "zero ablation of the discovered heads across training", "ablation"))
    elif tests.empty:
        blocks.append(Text(NO_SET, note=True))
    else:
        blocks.append(Text(ZERO_OPT_IN, note=True))
    for r in s4.onset_of_effect.itertuples():
        when = (f"from step {r.effect_from_step:.0f} on" if pd.notna(r.effect_from_step)
                else "at no step (not even at the last checkpoint)")
        on = onset_words(inflection, r.model, r.seed)
        blocks.append(Text(f"seed {r.seed}: zero-ablating the discovered heads beats its null {when}"
                           f"{'; ' + on if on else ''}"))
    dev = tests[tests["family"] == "zero"]
    if not dev.empty:
        blocks.append(Text(f"Each checkpoint at alpha {ALPHA}; p by {', '.join(sorted(dev['method'].unique()))}: a "
                           f"rank against n random sets cannot go below 1/(n+1) = {dev['p_floor'].max():.3g} with the "
                           f"fewest sets, so where that floor is above {RANK_RESOLVES:.3g} the t prediction test is "
                           "used.", note=True))
    if len(cm):
        size = int(cm["fdr_family_size"].max())
        blocks += [Figure("causal_map_chart", {"cmap": cm}, "causal head map (single-head ablation)", "causal-map"),
                   Text(f"Causal head map: paired item bootstrap of each head's R² drop, one-sided "
                        f"normal-approximation p from the bootstrap standard error, BH-FDR over "
                        f"{cm['fdr_family'].iloc[0]} (m = {size}). "
                        "Null tests of head sets: a rank against the random sets where its floor 1/(n+1) resolves "
                        "alpha, else a t prediction test (column method).", note=True),
                   Text(f"A lone cell of the causal head map needs p <= {ALPHA / size:.2g}.", note=True)]
    blocks += [
        Table(at_last_checkpoint(tests), "Null tests at the last checkpoint (drop in R²; p vs random sets)",
              keep=("family", "drop_r2", "null_mean", "p", "method", "p_floor")),
        Table(s4.controls[["model", "seed", "step", "condition", "drop_r2"]], "No-op control (drop must be 0)")]
    if len(s4.exactness):
        blocks += [Text(f"Exactness: every target->cue edge cut in every head, on the nouns whose sentences differ "
                        f"only in an equal-length cue; the largest pair distance must be at most {EXACT:g}.",
                        note=True),
                   Table(s4.exactness, "Exactness: every target→cue edge cut")]
    if len(s4.agreement):
        blocks.append(Table(s4.agreement, "Causal map vs discovery at the last checkpoint"))
    blocks += _qk(s4, inflection)
    blocks += [Text(f"{r.method} is not measured on this architecture: {r.reason}.", note=True)
               for r in s4.refused.itertuples()]
    if not len(cm):
        blocks.append(Text("The single-head ablation map, the zero / mean / resample ablations and the edge knockouts "
                           "are opt-in (Study(head_map=True, methods=...)); necessity per head is answered by the "
                           "patching maps below.", note=True))
    return blocks


def _qk(s4: Ablation, inflection: pd.DataFrame | None) -> list[Block]:
    """The original study's QK edits: where qk-copy copies from, per seed the last checkpoint's test and how often
    the edit beats its null from stage 1's onset on (``inflection``; Holm-corrected), the chart and the study's
    regression across development."""
    src = s4.design.loc[s4.design["family"] == "qk-copy", "source_step"]
    blocks: list[Block] = [Text(f"QK edits of the discovered heads (the original study's test) vs random same-size "
                                f"sets: qk-copy copies Q and K from step {int(src.iloc[0])} (step 1 when it is stored, "
                                "else the earliest stored checkpoint after step 0).", note=True)] if len(src) else []
    t = s4.tests[s4.tests["family"].isin(["qk-zero", "qk-copy"])]
    counts = (beats_null_after_onset(t, inflection).set_index(["family", "seed"]) if inflection is not None
              else pd.DataFrame())
    for (family, sd), g in t.groupby(["family", "seed"]):
        last = g.sort_values("step").iloc[-1]
        blocks.append(Text(f"seed {sd} {family}: at the last checkpoint drop {last.drop_r2:.4f} vs random "
                           f"({last.n_random}) mean {last.null_mean:.4f}, p = {last.p:.3g} ({last.method})"
                           + (_after_onset(counts.loc[(family, sd)]) if (family, sd) in counts.index else "")))
    dev = t[t["step"] < t["step"].max()]
    if len(counts) and len(dev):
        blocks.append(Text(f"Checkpoints are counted from each seed's stage-1 onset on (before it nothing is "
                           f"disambiguated), with Holm's correction across the checkpoints counted (family-wise "
                           f"error {ALPHA}). Before the last checkpoint a test has {dev['n_random'].min()} random "
                           f"sets, p by {', '.join(sorted(dev['method'].unique()))}: a rank p cannot go below 1/(n+1) "
                           f"= {dev['p_floor'].max():.3g}, and where that is above {RANK_RESOLVES:.3g} the t "
                           "prediction test, which has no floor, is used.", note=True))
    if len(t):
        blocks.append(Figure("ablation_chart", {"tests": s4.tests, "family": "qk-copy"}, "QK rows of the discovered "
                             "heads copied from the earliest checkpoint after step 0, across training, against random "
                             "sets", "qk-edit"))
    if len(s4.regression):
        blocks += [Figure("regression_chart", {"regression": s4.regression}, "the original study's regression: the "
                          "discovered-vs-random coefficient per seed with its 95% interval", "regression"),
                   Table(s4.regression, "The original study's regression: drop ~ log10(step + 1) + "
                                        "target-vs-random", keep=("n", "target_coef", "target_p", "target_p_sets")),
                   Text(f"The regression's rows are not independent: the sets measured at a checkpoint share its "
                        f"intact model, and a set keeps its heads at every checkpoint. Its 95% interval and p come "
                        f"from {REGRESSION_DRAWS} draws of a two-way cluster bootstrap (checkpoints and random sets "
                        f"resampled with replacement, the discovered set kept in every draw), so p cannot go below "
                        f"{2 / (REGRESSION_DRAWS + 1):.2g}. It holds the discovered set fixed, so it asks whether "
                        "the set differs from the random sets' average; whether it stands out among single random "
                        "sets (the study's null: a discovered set no different from a random one) is \"target p "
                        "sets\": each set's mean drop over the checkpoints, the discovered set's against the random "
                        "sets' (two-sided t prediction test, the set the unit). \"target p ols\" takes every row as "
                        "independent and is shown only to compare.", note=True)]
    return blocks


def _after_onset(r: pd.Series) -> str:
    """How often the edit beats its null from the seed's stage-1 onset on (a row of
    :func:`~lexprobe.analysis.nulls.beats_null_after_onset`), as the end of a sentence."""
    if pd.isna(r["onset_step"]):
        return "; no stage-1 onset, so no checkpoint is counted"
    if not r["checkpoints"]:
        return f"; no checkpoint tested from its stage-1 onset (step {r['onset_step']:.0f}) on"
    return (f"; from its stage-1 onset (step {r['onset_step']:.0f}) on, beats its null at {r['beats_null']} of "
            f"{r['checkpoints']} checkpoints after Holm's correction"
            + ("" if r["can_reject"] else " (none of these tests can reach the corrected threshold)"))


def _heads(g: pd.DataFrame) -> str:
    return heads_name((r.layer, r.head) for r in g.itertuples() if r.significant) or "-"


def _firsts(first: pd.DataFrame) -> str:
    got = first.dropna(subset=["first_step"]).sort_values(["first_step", "layer", "head"])
    return ", ".join(f"{head_name(r.layer, r.head)}@{r.first_step:.0f}" for r in got.itertuples()) or "-"


def exactness_line(exact: pd.DataFrame) -> str:
    """The patching exactness controls in one line: how many checkpoints pass and the worst difference."""
    worst = exact.filter(regex=r"_(distance|r2)$").to_numpy(float)
    return (f"Exactness controls: {int(exact['exact'].sum())} of {len(exact)} checkpoints exact (every difference at "
            f"most {EXACT_PATCH:g}), worst {np.nanmax(worst) if worst.size else float('nan'):.1e}.")


def patched_words(exact: pd.DataFrame) -> str:
    """How many sentences each map checkpoint patched and how many pairs it scored (per seed where they differ),
    from the exactness table's ``n_sentences`` and ``n_pairs``."""
    seeds = exact.groupby(["n_sentences", "n_pairs"])["seed"].unique()
    words = [f"{n_sentences} sentences patched, {n_pairs} pairs scored" for n_sentences, n_pairs in seeds.index]
    if len(words) == 1:
        return words[0]
    return "; ".join(f"seed{'s' * (len(sds) > 1)} {' '.join(str(sd) for sd in sorted(sds))}: {w}"
                     for w, sds in zip(words, seeds))


def patching_blocks(s4: Patching, inflection: pd.DataFrame | None) -> list[Block]:
    """The patching half of stage 4's view: the necessity and sufficiency maps, the last checkpoint's necessary and
    sufficient heads, the exactness controls, agreement with discovery, when each head first becomes necessary /
    sufficient (beside the inflection onset), the greedy sufficient sets."""
    cf, maps = s4.counterfactual, s4.patch_maps
    patched = f"; {patched_words(s4.patch_exactness)}" if len(s4.patch_exactness) else ""
    blocks: list[Block] = [
        Heading("Activation patching: necessity and sufficiency at the noun", "patching"),
        Text(f"Counterfactual: {cf.name} ({len(cf.sentences)} sentences, each cue replaced by a sense-neutral modifier "
             f"in its place; the noun's tokens matched by role){patched}. Noising replaces one head's output at the "
             "noun by its counterfactual output (necessity: drop in R²); denoising restores it in the counterfactual "
             "run (sufficiency: share of the clean R² above the counterfactual recovered).", note=True)]
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
        found = f"; sufficiency finds heads necessity missed: {heads_name(extra)}"
        blocks.append(Text(f"seed {sd} step {r.step}: clean R^2 {r.r2_clean:.3f}, counterfactual "
                           f"{r.r2_counterfactual:.3f}{base}; necessary: {_heads(nec)}; sufficient: {_heads(suf)}"
                           f"{found if extra else ''}"))
    blocks += [Text(exactness_line(s4.patch_exactness)),
               Table(s4.patch_exactness, "Exactness controls, every checkpoint (max abs differences; must be at most "
                                         f"{EXACT_PATCH:g}), with the sentences patched and the pairs scored",
                     collapsed=True),
               Table(s4.patch_agreement, "Necessary (noise) and sufficient (denoise) heads at the last checkpoint vs "
                     "discovery", keep=("direction", "causal", "discovered", "both", "causal_heads",
                                        "discovered_heads")),
               Table(s4.patch_first.dropna(subset=["first_step"]),
                     "First checkpoint at which each head is significant")]
    for (model, sd), g in s4.patch_first.groupby(["model", "seed"]):
        on = onset_words(inflection, model, sd)
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
    blocks.append(Table(s4.greedy_tests, "Greedy sets against random same-size sets, and how they work (OR / AND)",
                        keep=("size", "reached", "recovered", "recovered_p", "drop_p", "reading")))
    return blocks



REPORT = Report(describe, findings)
