"""The validation view: the construct check per seed and how well stages 2 and 4 find the planted heads."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lexprobe.analysis import detection, validity
from lexprobe.analysis.primitives import at_last_checkpoint
from lexprobe.base.heads import heads_name
from lexprobe.base.view import Block, Figure, Table, Text, View
from lexprobe.checkpoints.suites import log_subset
from lexprobe.report import Earlier, Report
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.pairs import ONE, PAIR_MIN
from lexprobe.stages.validation import Validation


def _named(heads: pd.DataFrame) -> str:
    """The heads of a table with layer and head columns, as the reports list them ('none' for none)."""
    return heads_name(sorted({(int(r.layer), int(r.head)) for r in heads.itertuples()})) or "none"


def _kept_by_step(per_head: pd.DataFrame) -> pd.DataFrame:
    """Per planted head, its ``kept_alone`` share at each checked step, starred where it is certified."""
    cell = [f"{k:.2f}{'*' if c else ''}" if pd.notna(k) else "-" for k, c in
            zip(per_head["kept_alone"], per_head["certified"])]
    wide = per_head.assign(cell=cell).pivot(index=["model", "seed", "layer", "head"], columns="step", values="cell")
    return wide.rename(columns=lambda c: f"step {c}").reset_index()


def _curve_summary(curves: pd.DataFrame, n: int = 6) -> pd.DataFrame:
    """Pooled recall (precision) per map at about ``n`` checkpoints evenly spread from the first at which any map
    finds a certified head to the last (log-spaced over all of them when none does), a column per checkpoint."""
    pooled = curves[curves["seed"].astype(str) == detection.ALL_SEEDS]
    steps = sorted(set(pooled["step"]))
    found = pooled.loc[pooled["true_positives"] > 0, "step"]
    span = [s for s in steps if s >= found.min()] if len(found) else []
    at = {span[int(round(i))] for i in np.linspace(0, len(span) - 1, min(n, len(span)))} if span else \
        set(log_subset(steps, n))
    cell = [f"{r:.2f} ({'-' if pd.isna(p) else f'{p:.2f}'})" if pd.notna(r) else "-"
            for r, p in zip(pooled["recall"], pooled["precision"])]
    wide = pooled.assign(cell=cell)[pooled["step"].isin(at)].pivot(index="method", columns="step", values="cell")
    return wide.rename(columns=lambda c: f"step {c}").reset_index().fillna("")


TITLE = "Validation against a planted circuit"
HOW = ("`lexprobe validate --html FILE` trains (or reuses) the planted organism, whose noun->cue edges were open only "
       "in designated heads during training, and writes its supplement with this section filled in.")


def skipped(label: str, reason: str) -> View:
    """The validation section of a study it cannot validate (no planted circuit, or stages 2 and 4 did not run)."""
    return View(TITLE, "validation", (Text(f"Nothing here is held against known heads: {reason}.", note=True),
                                      Text(HOW, note=True)))


def describe(v: Validation, earlier: Earlier) -> View:
    """The validation view: the construct check per seed and how well stages 2 and 4 find the planted heads."""
    stage1: Inflection = earlier["inflection"]
    verdicts = tuple(Text(
        f"seed {r.seed} step {r.step}: planted "
        f"{_named(v.planted[v.planted['seed'] == r.seed])}: "
        f"{'PASS' if r.passes else 'FAIL (the planted set is not ground truth for this seed)'}")
        for r in v.construct.itertuples())
    last = at_last_checkpoint(v.per_head)
    blocks: tuple[Block, ...] = (
        Text("Training cut the attention edges from each ambiguous noun's tokens to its cue's tokens in every head "
             "but the planted ones. Construct check: cutting the planted heads' target->cue edges at the last "
             f"checkpoint must remove at least {validity.MIN_PLANTED:.0%} of best-layer {stage1.score}, cutting "
             f"them in every other head at most {validity.MAX_OTHERS:.0%}; a seed that fails has no ground truth.",
             note=True),
        *verdicts,
        Table(v.construct, "Construct check per seed (last checkpoint)"),
        *(Text(f"seed {sd}: the planted heads work as {g['reading'].iloc[0]}; certified (each carries the cue "
               f"alone or is needed): {_named(g[g['certified']])}") for sd, g in last.groupby("seed")),
        Table(last, "Per-head construct check: share of intact R² removed when each planted head's edges "
                    "alone are cut, and kept when it alone keeps them (last checkpoint)"),
        Table(_kept_by_step(v.per_head), "Per-head construct check across training: share each planted head "
                                         "keeps alone (* where certified)"),
        Text("Precision: share of found heads that are certified planted heads (a dash when none are found); "
             "recall: share of those found. Across training, a map is scored at each checkpoint against the "
             "certified heads whose edges had opened by then.", note=True),
        Table(v.validity, "Precision and recall against the certified planted heads (those the per-head "
                          "construct check finds carrying the cue) at the last checkpoint (seed 'all': counts "
                          "pooled over seeds)"),
        Figure("detection_chart", {"curves": v.curves, "planted": v.planted},
               "precision and recall of each head map across training", "detection"),
        Table(_curve_summary(v.curves), "Recall (precision) of each map at a few checkpoints from the first at "
                                        "which any map finds a certified head, pooled over seeds"),
        Table(v.first_significant, "First checkpoint at which each planted head is significant in each map, "
                                   "beside its planted opening step, the step from which the per-head "
                                   "construct check certifies it (carrier_step), and stage 1's onset"),
        Table(v.readings, "What was planted, what the organism learned (per-head construct check) and how the "
                          "greedy sufficient set reads, per seed"),
        *_decoy_blocks(v),
        Text("Pair tests at the last checkpoint: the 4 heads the single-head patch maps rank highest, noised and "
             "denoised alone and in pairs. OR: noised together the pair removes at least "
             f"{PAIR_MIN:.0%} of the clean score and neither alone removes half of that; AND: denoised together "
             "it restores at least as much and neither alone restores half; joint: both; one: one member alone "
             f"does at least {ONE:.0%} of what the pair does both ways, the other under {1 - ONE:.0%}; additive: "
             "the pair moves that much otherwise. The interaction is the joint share minus the two members' own.",
             note=True),
        Table(v.pairs, "Pairwise noising and denoising of the top heads per seed (last checkpoint)"),
        Table(detection.pooled(v.methods, ["method", "model"]).query("seed == 'all'"),
              "Every method at the last checkpoint, pooled over seeds: precision, recall, decoy false-positive "
              "rate and AUROC (pessimistic, ties against the method; mean over seeds). The comparison across "
              "profiles with intervals and protocol 3's two decisions: `lexprobe validate --rules`"))
    return View(TITLE, "validation", blocks)


def _decoy_blocks(v: Validation) -> tuple[Block, ...]:
    """The decoy check (plants with decoy heads only): what each decoy carries, and whether it is certified
    empty."""
    if v.decoys.empty:
        return ()
    per_head = v.decoys.groupby(["model", "seed", "layer", "head", "kind"], as_index=False).agg(
        judged_steps=("judged", "sum"), checked_steps=("step", "nunique"),
        max_removed=("removed_when_cut", lambda x: x.abs().max()), max_kept=("kept_alone", lambda x: x.abs().max()),
        certified_empty=("certified_empty", "all"))
    empty = int(per_head["certified_empty"].sum())
    return (Text(f"Decoy heads attend to the cue (or to the token before the noun) on a trajectory that rises "
                 f"after the planted onset, and carry nothing by construction. A decoy is certified empty when, "
                 f"at every checked step where the noun->cue edges carry the cue, cutting its edges alone removes "
                 f"and leaving it alone open keeps under {validity.DECOY_MAX:.0%} of what those edges carry: "
                 f"{empty} of {len(per_head)} decoys are. Naming a certified-empty decoy is a decoy false "
                 f"positive.", note=True),
            Table(per_head, "Decoy check per decoy head (largest shares over the judged steps)"))



REPORT = Report(describe, skipped=skipped)
