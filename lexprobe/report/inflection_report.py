"""Stage 1 in words: when disambiguation takes off in each seed, and its view."""

from __future__ import annotations

import pandas as pd

from lexprobe.base.view import Block, Figure, Table, Text, View
from lexprobe.report import Earlier, Report
from lexprobe.report.findings import Finding, Writer, lead, seeds_in_words
from lexprobe.stages.inflection import STAGE, Inflection


def findings(s1: Inflection, earlier: Earlier) -> list[Finding]:
    """When disambiguation takes off in each seed, with its item-bootstrap interval, and where it ends."""
    w = Writer(s1)
    parts, flat = [], []
    for r in s1.inflection.itertuples():
        key = {"model": r.model, "seed": r.seed}
        if not pd.notna(r.onset_step):
            flat.append(int(r.seed))
            continue
        onset = w.num("inflection", "onset_step", fmt=".0f", **key)
        if pd.notna(r.onset_boot_low_step) and pd.notna(r.onset_boot_high_step):
            interval = (f" [{w.num('inflection', 'onset_boot_low_step', fmt='.0f', **key)}, "
                        f"{w.num('inflection', 'onset_boot_high_step', fmt='.0f', **key)}]")
        else:
            interval = " (no bootstrap interval)"
        parts.append(f"step {onset}{interval} in seed {r.seed}")
    score = "R²" if s1.score == "r2" else s1.score
    text = (f"Disambiguation (best-layer {score} of the ambiguous word's contextual distances) takes off at "
            + "; ".join(parts) if parts else f"No seed shows a rise of best-layer {score}")
    if flat:
        text += f"; no onset was found in {seeds_in_words(flat)} (no rise the curve models can place)"
    w.say(text + " (item-bootstrap intervals).", headline=True)
    last = int(s1.best["step"].max())
    w.say(f"At the last checkpoint (step {w.num('best', 'step', 'max', '.0f')}) best-layer {score} is "
          f"{w.num('best', s1.score, 'median', '.3f', step=last)} (median over "
          f"{w.num('best', 'seed', 'distinct', '.0f', step=last)} seeds; range "
          f"{w.num('best', s1.score, 'min', '.3f', step=last)} to {w.num('best', s1.score, 'max', '.3f', step=last)}).")
    if "saturation_censored" in s1.inflection and s1.inflection["saturation_censored"].fillna(False).any():
        w.say(f"The rise has not levelled off: saturation is censored at the last checkpoint in "
              f"{w.num('inflection', 'saturation_censored', 'count', '.0f')} of "
              f"{w.num('inflection', 'seed', 'rows', '.0f')} seeds (still rising there), so no plateau is observed "
              "and every last-checkpoint result is taken mid-rise.", headline=True)
    if getattr(s1, "onset", None) is not None:
        w.say(f"In the organism's training corpus the cue starts to predict the sense of what follows at step "
              f"{w.num('@onset', fmt='.0f')} (before it, nothing rewards disambiguation).")
    return w.findings



def _interval(lo: float, hi: float) -> str:
    """A profile interval in words; one of zero width is a failure of the interval, not a certainty."""
    if lo != lo:
        return "none"
    if lo == hi:
        return (f"FAILED (zero width at {lo:.0f}: no other point of the profile's grid lies inside the confidence "
                "set, so the grid is coarser than the interval; read the item-bootstrap interval instead)")
    return f"[{lo:.0f}, {hi:.0f}]"


def onset_words(inflection: pd.DataFrame | None, model: str, seed: int) -> str:
    """Stage 1's inflection onset of (model, seed) as words ('' without stage 1's table or its row)."""
    if inflection is None:
        return ""
    o = inflection.loc[(inflection["model"] == model) & (inflection["seed"] == seed), "onset_step"]
    if o.empty:
        return ""
    return f"inflection onset {float(o.iloc[0]):.0f}" if pd.notna(o.iloc[0]) else "no inflection onset"


def censored_shown(inflection: pd.DataFrame) -> pd.DataFrame:
    """The inflection table with every censored step written as the bound it is instead of a number that reads as
    observed: a saturation '>= 512' (not reached by the last checkpoint), an onset '<= 0' (rising from the first)."""
    out = inflection.copy()
    for what, bound in (("onset", "<="), ("saturation", ">=")):
        flag = f"{what}_censored"
        if flag in out:
            cut = out[flag].fillna(False).astype(bool)
            out[f"{what}_step"] = [f"{bound} {v:.0f} (censored)" if c else (f"{v:.0f}" if pd.notna(v) else "–")
                                   for v, c in zip(out[f"{what}_step"], cut)]
    return out


def describe(s1: Inflection, earlier: Earlier) -> View:
    """Stage 1's view (``lexprobe inflection``): the suite, warnings about duplicate or skipped checkpoints, the
    trajectories, and per seed the curve model AICc chose, onset (= "the inflection") with its intervals, midpoint,
    saturation and steepest rise; with a planted onset, whether each seed's onset interval lies after it and its
    estimate is within 4x of it."""
    prov = s1.store.provenance(suite=s1.suite.name, stimuli=s1.stimuli.name, condition=s1.condition)
    blocks: list[Block] = [Text(lead(findings(s1, earlier))), Text(
        f"suite {s1.suite.name}: {s1.best['model'].nunique()} model(s), {s1.best['seed'].nunique()} seed(s), "
        f"{s1.best['step'].nunique()} checkpoints, stimuli {s1.stimuli.name} ({len(s1.stimuli.pairs)} pairs, target: "
        f"{s1.target}); best layer by {s1.scoring.by}"
        f"{' (embedding layer excluded)' if s1.scoring.exclude_embedding else ''}")]
    blocks += [Text(f"WARNING: {r.model} seed {r.seed} step {r.step} has the same weights as the previous step")
               for r in prov[prov["same_as_previous"]].itertuples()]
    blocks += [Text(f"WARNING: skipped {r.model} seed {r.seed} step {r.step}: {r.reason}")
               for r in s1.status[s1.status["status"] == "skipped"].drop_duplicates(
                   ["model", "seed", "step"]).itertuples()]
    blocks += [Text(f"revision {name!r} left out: {why}", note=True)
               for name, why in s1.suite.metadata.get("left_out", {}).items()]
    blocks += [
        Text(f"Best-layer {s1.score} across training per seed; the inflection is the onset of the rise (curve model "
             "chosen by AICc on log10(step+1)), with profile-likelihood and item-bootstrap intervals."),
        Figure("performance_chart", {"best": s1.best, "inflection": s1.inflection, "onset": s1.onset,
                                     "score": s1.score, "fitted": s1.fitted},
               "best-layer score across training, all seeds", "performance"),
        Figure("layer_chart", {"perf": s1.perf}, "score per layer and checkpoint (mean over seeds)", "layers"),
        Table(censored_shown(s1.inflection)[["model", "seed", "curve_model", "shape", "onset_step", "onset_low_step",
                                             "onset_high_step", "onset_boot_low_step", "onset_boot_high_step",
                                             "midpoint_step", "saturation_step", "changepoint_step"]],
              "Inflection per seed (a censored step is a bound: '>= 512' means not reached by the last checkpoint)")]
    last = s1.best.sort_values("step").groupby(["model", "seed"])
    for r in s1.inflection.itertuples():
        g = last.get_group((r.model, r.seed))[s1.score]
        blocks.append(Text(f"seed {r.seed}: best-layer {s1.score} {g.iloc[0]:.3f} at the first checkpoint, "
                           f"{g.iloc[-1]:.3f} at the last; steepest rise {r.max_increase_from:.0f}->"
                           f"{r.max_increase_step:.0f} ({r.max_increase_per_decade:.3f} per decade)"))
    if s1.onset is not None:
        blocks.append(Text(f"Corpus onset of the organism (the cue predicts the continuation's sense from this step "
                           f"on): step {s1.onset}."))
        for r in s1.inflection.itertuples():
            after = r.onset_low_step > s1.onset and r.onset_low_step < r.onset_high_step  # no (or a failed) interval
            within = s1.onset / 4 <= r.onset_step <= s1.onset * 4
            estimate = f"{r.onset_step:.0f}" if r.onset_step == r.onset_step else f"none ({r.shape}, {r.selected_by})"
            blocks.append(Text(f"seed {r.seed}: onset interval {_interval(r.onset_low_step, r.onset_high_step)} "
                               f"lies after the onset ({s1.onset}): {'yes' if after else 'NO'}; onset estimate "
                               f"{estimate} within 4x of the onset [{s1.onset / 4:.0f}, {s1.onset * 4:.0f}]: "
                               f"{'yes' if within else 'NO'}"))
    return View(f"Stage 1 · {STAGE.title}", "stage1", tuple(blocks))



REPORT = Report(describe, findings)
