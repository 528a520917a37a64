"""Stage 3 in words: how much each perturbed set keeps and how the discovered heads fare, and its view."""

from __future__ import annotations

from lexprobe.analysis.primitives import at_last_checkpoint
from lexprobe.base.view import Block, Figure, Table, Text, View
from lexprobe.report import Earlier, Report, left_out
from lexprobe.report.findings import Finding, Writer, lead
from lexprobe.stages.perturbation import MIN_PAIRS, MIN_SHARE, STAGE, Perturbation


def roles(s3: Perturbation) -> dict[str, str]:
    """Each perturbed set's role in stage 3's tests: ``perturbation`` (the cue moved) or ``control`` (removed)."""
    return s3.heads.groupby("perturbation")["role"].first().to_dict() if len(s3.heads) else {}


def findings(s3: Perturbation, earlier: Earlier) -> list[Finding]:
    """How much of the intact score each moved cue keeps, and how many discovered heads stay on the cue."""
    w = Writer(s3)
    last = int(s3.retained["step"].max())
    role = roles(s3)
    moved = [p for p in sorted(s3.retained["perturbation"].unique()) if role.get(p, "perturbation") != "control"]
    kept = []
    for p in moved:
        kept.append(f"{p} {w.num('retained', 'r2_retained_net', 'median', '.0%', step=last, perturbation=p)} "
                    f"(raw {w.num('retained', 'r2_retained', 'median', '.0%', step=last, perturbation=p)})")
    if kept:
        w.say(f"At the last checkpoint, net of each set's own R² before training (its words alone), the perturbed sets "
              f"keep this median share of the intact gain across seeds: {'; '.join(kept)} (raw: the share of the "
              "intact R² without that baseline).", headline=True)
    for p in sorted(set(s3.retained["perturbation"].unique()) - set(moved)):
        w.say(f"Control '{p}' (the cue removed, a neutral word in its place; not a perturbation) keeps "
              f"{w.num('retained', 'r2_retained', 'median', '.0%', step=last, perturbation=p)} of the intact R², "
              "as it should if the cue is what carries the sense.")
    heads = s3.heads[(s3.heads["step"] == last) & s3.heads["discovered"].fillna(False).astype(bool)]
    if heads.empty:
        w.say("No head passed discovery, so no head's cue attention is tested under perturbation.")
        return w.findings
    robust = w.num("heads", "passes", "count", ".0f", step=last, discovered=True, role="perturbation")
    tests = w.num("heads", "passes", "rows", ".0f", step=last, discovered=True, role="perturbation")
    text = (f"Of {tests} tests of discovered heads against moved cues at the last checkpoint, {robust} find the head "
            "still attending to the cue more than to the word now in its place (robust)")
    if (heads["role"] == "control").any():
        spec = w.num("heads", "passes", "count", ".0f", step=last, discovered=True, role="control")
        n_ctl = w.num("heads", "passes", "rows", ".0f", step=last, discovered=True, role="control")
        text += (f"; in the neutral-word control, {spec} of {n_ctl} attend to the informative cue more than to a "
                 "neutral modifier")
    w.say(text + ".", headline=True)
    return w.findings



def describe(s3: Perturbation, earlier: Earlier) -> View:
    """Stage 3's view: the perturbed sets, the share of the intact best-layer R² each keeps (and of the intact gain
    over its untrained baseline), the sets not scored, and the discovered heads' cue attention under each."""
    last = at_last_checkpoint(s3.retained)

    def per_seed(value: str, caption: str) -> Table:
        return Table(last.pivot_table(index="seed", columns="perturbation", values=value).reset_index(), caption)

    blocks: list[Block] = [
        Text(lead(findings(s3, earlier))), *left_out(s3.parts_skipped),
        Figure("perturbation_chart", {"best": s3.best,
                                      "controls": tuple(p for p, r in roles(s3).items() if r == "control")},
               "best-layer R² under each perturbation and control", "perturbation"),
        Figure("robustness_heatmap", {"heads": s3.heads}, "cue attention kept under perturbation", "robustness"),
        Table(s3.distance, "Perturbed sets (cue-target distance in tokens)"),
        per_seed("r2_retained_net", "Headline: share of the intact gain over baseline kept at the last checkpoint: "
                                    "(R² − baseline) / (intact R² − intact baseline)"),
        per_seed("r2_baseline", "Baseline: each perturbed set's own R² at its first checkpoint (its words alone, "
                                "before training)"),
        per_seed("r2_retained", "Raw share of the intact best-layer R² kept at the last checkpoint (baseline not "
                                "removed)")]
    blocks += [Text(f"'{r.perturbation}': not enough pairs ({r.pairs}; at least {MIN_PAIRS} and {MIN_SHARE:.0%} of "
                    "the intact set's are needed): not scored")
               for r in s3.distance[~s3.distance["enough_pairs"].astype(bool)].itertuples()]
    for p in s3.distance.loc[s3.distance["phrase_seen_in_training"].fillna(False).astype(bool), "perturbation"]:
        kept = last.loc[last["perturbation"] == p, "r2_retained"]
        blocks.append(Text(f"'{p}' (phrase seen in training) keeps at least half of the intact R^2 in every seed: "
                           f"{'yes' if bool((kept >= 0.5).all()) else 'NO'} (min {kept.min():.3f})"))
    blocks += [Text("robust:* columns (moved cues): the head attends to the cue more than to the word now standing "
                    "where the cue stood; 'control cue>neutral' (a control, not a perturbation: it removes the cue): "
                    "the head attends to the informative cue more than to a neutral modifier. Each a paired "
                    "one-sided t-test, BH q < .05 over the heads x sets of each seed and checkpoint", note=True),
               Table(s3.summary, "Discovered heads at the last checkpoint: cue attention intact and perturbed",
                     keep=tuple(c for c in s3.summary.columns if c.startswith(("robust:", "control "))))]
    return View(f"Stage 3 · {STAGE.title}", "stage3", tuple(blocks))



REPORT = Report(describe, findings)
