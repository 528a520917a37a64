"""Across the stages: each head that stage 2 discovers or a patching map names, followed through every stage (one
row per head and seed), each seed's results side by side, and the conclusion that joins them, in sentences quoted
from those two tables (never written by hand).

A reader of one stage sees that stage's heads; the study's question (which heads carry the cue's sense, and since
when) is answered only where the stages meet: do the heads whose attention tracks disambiguation (stage 2) stay on
the cue when it moves (stage 3), matter when patched or edited (stage 4), and recur across seeds (stage 5)?
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from lexprobe.analysis.primitives import at_last_checkpoint
from lexprobe.analysis.selection import ALPHA
from lexprobe.base.heads import head_name, parse_heads
from lexprobe.base.view import Block, Table, Text, View
from lexprobe.report.findings import Finding, Writer, lead
from lexprobe.stages import STAGES
from lexprobe.stages.registry import Skipped

if TYPE_CHECKING:
    from lexprobe.study import Study

KEYS = ["model", "seed", "layer", "head"]
RUN = ["model", "seed"]
# the per-head columns the conclusion quotes: shown before any the table folds
QUOTED = ("named_by", "discovered", "robust", "moved_sets", "cue_over_neutral", "necessary", "sufficient")
SUPPORTED = 0.5  # the share of seeds whose QK-edit test rejects above which the conclusion calls the heads supported


@dataclass(frozen=True)
class Across:
    """The stages joined: ``heads`` (one row per (model, seed, head) discovered by stage 2 or named by a patching
    map at the last checkpoint, with its result in every stage that ran) and ``seeds`` (one row per (model, seed):
    onset, how many heads each stage names, how many of them coincide, the QK-edit test of the discovered set)."""

    heads: pd.DataFrame
    seeds: pd.DataFrame
    ran: tuple[str, ...]  # the stages whose results the tables hold


def _ran(outcomes: dict[str, Any], name: str) -> Any:
    out = outcomes.get(name)
    return None if out is None or isinstance(out, Skipped) else out


def _flag(df: pd.DataFrame, column: str) -> pd.Series:
    return df[column].fillna(False).astype(bool)


def of_study(study: Study) -> Across | None:
    """The stages of ``study`` joined (each run, or read from its cache, first)."""
    return across({name: study.outcome(name) for name in STAGES})


def across(outcomes: dict[str, Any]) -> Across | None:
    """The stages joined, from their outcomes by name (a result or :class:`Skipped`); None without stage 2."""
    s2 = _ran(outcomes, "discovery")
    if s2 is None:
        return None
    stats = s2.stats
    heads = stats[KEYS].assign(discovered=_flag(stats, "passes"), cue_r=stats["r"], q_discovery=stats["q"],
                               beats_prev=_flag(stats, "beats_prev"))
    ran = ["discovery"]
    if (s3 := _ran(outcomes, "perturbation")) is not None:
        heads, ran = heads.merge(_robustness(s3.heads), on=KEYS, how="left"), [*ran, "perturbation"]
    if (s4 := _ran(outcomes, "causal")) is not None and len(s4.patching.patch_maps):
        heads, ran = heads.merge(_patching(s4.patching), on=KEYS, how="left"), [*ran, "causal"]
        for col in ("necessary", "sufficient", "in_greedy_set"):
            heads[col] = _flag(heads, col)
    if (s5 := _ran(outcomes, "replication")) is not None:
        counts = s5.head_counts[["model", "layer", "head", "n_seeds_selecting"]]
        heads, ran = heads.merge(counts, on=["model", "layer", "head"], how="left"), [*ran, "replication"]
    named = heads["discovered"]
    for col in ("necessary", "sufficient"):
        if col in heads:
            named = named | heads[col]
    heads = heads[named].copy()
    heads.insert(4, "named_by", [_named_by(r) for r in heads.itertuples()])
    return Across(heads.reset_index(drop=True), _seeds(heads, outcomes), tuple(ran))


def _named_by(r: Any) -> str:
    said = [what for what, col in (("discovery", "discovered"), ("noising", "necessary"), ("denoising", "sufficient"))
            if getattr(r, col, False)]
    return " + ".join(said)


def _robustness(heads: pd.DataFrame) -> pd.DataFrame:
    """Per head at the last checkpoint: moved-cue tests passed (robust), tests made, and the neutral control."""
    last = at_last_checkpoint(heads).assign(passed=lambda d: _flag(d, "passes"))
    moved = last[last["role"] == "perturbation"].groupby(KEYS)["passed"].agg(robust="sum", moved_sets="size")
    control = last[last["role"] == "control"].groupby(KEYS)["passed"].any().rename("cue_over_neutral")
    return moved.join(control, how="outer").reset_index()


def _patching(p: Any) -> pd.DataFrame:
    """Per head at the last checkpoint: necessary / sufficient (and their shares), the first step each holds, and
    membership of the greedy sufficient set."""
    maps = at_last_checkpoint(p.patch_maps[p.patch_maps["unit"] == "head"])
    out = None
    for direction, col in (("noise", "necessary"), ("denoise", "sufficient")):
        d = maps[maps["direction"] == direction].set_index(KEYS)
        part = pd.DataFrame({col: d["significant"].astype(bool), f"{col}_share": d["share"]})
        out = part if out is None else out.join(part, how="outer")
    first = p.patch_first.pivot_table(index=KEYS, columns="direction", values="first_step", aggfunc="min")
    first = first.rename(columns={"noise": "first_necessary_step", "denoise": "first_sufficient_step"})
    out = out.join(first, how="left")  # type: ignore[union-attr]  # two directions always
    greedy = at_last_checkpoint(p.greedy_tests) if len(p.greedy_tests) else p.greedy_tests
    members = {(r.model, r.seed, la, he) for r in greedy.itertuples() for la, he in parse_heads(str(r.set))}
    out["in_greedy_set"] = [key in members for key in out.index]
    return out.reset_index()


def _seeds(heads: pd.DataFrame, outcomes: dict[str, Any]) -> pd.DataFrame:
    """One row per (model, seed): onset, the heads each stage names and their overlaps, the QK-edit test."""
    stats = outcomes["discovery"].stats
    seeds = stats[RUN].drop_duplicates().reset_index(drop=True)
    if (s1 := _ran(outcomes, "inflection")) is not None:
        seeds = seeds.merge(s1.inflection[[*RUN, "onset_step"]], on=RUN, how="left")
    seeds = seeds.merge(stats.groupby(RUN)["passes"].sum().rename("discovered").reset_index(), on=RUN)
    for col in ("necessary", "sufficient"):
        if col in heads:
            g = heads.groupby(RUN)
            seeds = seeds.merge(g[col].sum().rename(col).reset_index(), on=RUN, how="left")
            both = heads[heads["discovered"] & heads[col]].groupby(RUN).size().rename(f"discovered_{col}")
            seeds = seeds.merge(both.reset_index(), on=RUN, how="left")
    if (s4 := _ran(outcomes, "causal")) is not None:
        qk = at_last_checkpoint(s4.ablation.tests[s4.ablation.tests["family"] == "qk-copy"])
        seeds = seeds.merge(qk[[*RUN, "drop_r2", "null_mean", "p"]].rename(
            columns={"drop_r2": "qk_copy_drop", "null_mean": "qk_copy_random_mean", "p": "qk_copy_p"}), on=RUN,
            how="left")
    counts = [c for c in seeds.columns if c in ("discovered", "necessary", "sufficient") or c.startswith("discovered_")]
    seeds[counts] = seeds[counts].fillna(0).astype(int)
    return seeds


def conclusion(a: Across) -> list[Finding]:
    """The study's answer in sentences that join the stages, quoted from :class:`Across`'s tables; a negative causal
    result is said as such."""
    w = Writer(a)
    runs = w.num("seeds", "seed", "rows", ".0f")
    found = w.num("heads", "discovered", "count", ".0f")
    when = ""
    if "onset_step" in a.seeds and a.seeds["onset_step"].notna().any():
        when = (f"disambiguation takes off between step {w.num('seeds', 'onset_step', 'min', '.0f')} and step "
                f"{w.num('seeds', 'onset_step', 'max', '.0f')} (stage 1), and ")
    w.say(f"Across the stages: in {runs} seeds, {when}stage 2 discovers {found} (head, seed) cases whose attention to "
          "the cue rises with disambiguation.")
    if not a.heads["discovered"].any():
        w.say("With no discovered head, the study names no heads to follow through the later stages; the heads the "
              "patching maps name are in the table below.", headline=True)
        return w.findings
    if "robust" in a.heads:
        w.say(f"Moved cues (stage 3): the discovered heads stay on the cue in "
              f"{w.num('heads', 'robust', 'sum', '.0f', discovered=True)} of "
              f"{w.num('heads', 'moved_sets', 'sum', '.0f', discovered=True)} tests at the last checkpoint, and "
              f"{w.num('heads', 'cue_over_neutral', 'count', '.0f', discovered=True)} of "
              f"{w.num('heads', 'discovered', 'count', '.0f')} attend to the informative cue more than to a neutral "
              "word in its place (the control).")
    if "necessary" not in a.heads:
        return w.findings
    w.say(f"Causal tests (stage 4): of the {w.num('heads', 'discovered', 'count', '.0f')} discovered cases, the "
          "noising map calls "
          f"{w.num('heads', 'necessary', 'count', '.0f', discovered=True)} necessary and the denoising map "
          f"{w.num('heads', 'sufficient', 'count', '.0f', discovered=True)} sufficient at the last checkpoint "
          f"(of the {w.num('heads', 'necessary', 'count', '.0f')} and "
          f"{w.num('heads', 'sufficient', 'count', '.0f')} cases those maps name in all)"
          + (f"; QK edits of each seed's discovered set drop R² more than random same-size sets (p < "
             f"{w.num('=alpha', fmt='g')}) in {w.num('seeds', 'qk_copy_p', 'below', '.0f')} of "
             f"{w.num('seeds', 'qk_copy_p', 'rows', '.0f', qk_copy_p=('>', -1.0))} seeds with a discovered set"
             if "qk_copy_p" in a.seeds and a.seeds["qk_copy_p"].notna().any() else "") + ".",
          headline=True)
    w.say(_verdict(a), headline=True)
    return w.findings


def _verdict(a: Across) -> str:
    """The conclusion in one sentence, decided by the causal tests (it quotes no number: the sentence before it
    holds them)."""
    tested = a.seeds["qk_copy_p"].dropna() if "qk_copy_p" in a.seeds else pd.Series(dtype=float)
    causal = a.heads["necessary"] | a.heads["sufficient"]
    overlap = int((a.heads["discovered"] & causal).sum())
    if tested.empty:
        return ("So the study answers when; whether the discovered heads carry the cue's sense was not tested by "
                "their QK edits.")
    share = float((tested < ALPHA).mean())
    if share > SUPPORTED and overlap:
        return ("So the causal tests support the discovered heads as carriers of the cue's sense in most seeds, "
                "and the patching maps name some of them.")
    if share == 0:
        return ("So the study answers when disambiguation takes off, but not which heads carry it: the study's own "
                "causal test does not single out the discovered heads against random ones"
                + (", and the heads the patching maps name are mostly others." if overlap * 2 < int(causal.sum())
                   else "."))
    return ("So the causal support for the discovered heads is mixed: their QK edits stand out in some seeds and not "
            "in others.")


def view(a: Across | None) -> View:
    """The section that joins the stages: the conclusion, each seed side by side, each head through every stage."""
    title = "Across the stages · Which heads, through every stage"
    if a is None:
        return View(title, "across", skipped="no head was discovered or named: stage 2 did not run")
    heads = a.heads.assign(head=[head_name(r.layer, r.head) for r in a.heads.itertuples()]).drop(columns="layer")
    heads = heads[["model", "seed", "head", *[c for c in heads.columns if c not in ("model", "seed", "head")]]]
    blocks: list[Block] = [
        Text(lead(conclusion(a))),
        Text("Stages joined: " + ", ".join(a.ran) + ". Per head: discovered (stage 2 passes), cue r (correlation of "
             "its cue attention with R² across checkpoints) and its q; beats prev (the previous-token control); "
             "robust of moved sets (stage 3, last checkpoint); cue over neutral (the control); necessary / sufficient "
             "(stage 4 noising / denoising, BH-FDR, last checkpoint) with the share of R² each moves and the first "
             "step it holds; in greedy set; n seeds selecting (stage 5).", note=True),
        Table(a.seeds, "Each seed, every stage (counts of (head, seed) cases; qk-copy: the original study's test at "
                       "the last checkpoint)", keep=tuple(a.seeds.columns)),
        Table(heads, "Each discovered head, and each head a patching map names, through every stage",
              collapsed=False, keep=tuple(c for c in QUOTED if c in heads.columns))]  # the stages that ran
    return View(title, "across", tuple(blocks))
