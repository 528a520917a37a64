"""Stage 2 in words: which heads pass discovery, and its view."""

from __future__ import annotations

import pandas as pd

from lexprobe.analysis.selection import DEFAULT_RULE, RULE_TITLES
from lexprobe.base.heads import head_name
from lexprobe.base.view import Figure, Table, Text, View
from lexprobe.report import Earlier, Report
from lexprobe.report.findings import MAX_NAMED, Finding, Writer, ground_truth, lead
from lexprobe.stages.discovery import STAGE, Discovery


def findings(s2: Discovery, earlier: Earlier) -> list[Finding]:
    """How many seeds have heads that pass discovery, and which."""
    w = Writer(s2)
    n = w.num("stats", "seed", "distinct", ".0f")
    with_heads = w.num("stats", "seed", "distinct", ".0f", passes=True)
    per = []
    for (model, sd), g in s2.stats.groupby(["model", "seed"]):
        heads = [head_name(r.layer, r.head) for r in g.itertuples() if r.passes]
        count = w.num("stats", "passes", "count", ".0f", model=model, seed=sd)
        named = f" ({', '.join(heads)})" if 0 < len(heads) <= MAX_NAMED else ""
        per.append(f"seed {sd}: {count}{named}")
    rule = _rule(s2.stats)
    w.say(f"Heads whose attention from the noun to its cue rises with disambiguation across training ({rule}, "
          f"BH-FDR) pass in {with_heads} of {n} seeds; heads per seed: {'; '.join(per)}.", headline=True)
    if s2.stats["passes"].any() and "beats_prev" in s2.stats:
        failing = w.num("stats", "beats_prev", "rows", ".0f", passes=True, beats_prev=False)
        w.say(f"Of the {w.num('stats', 'passes', 'count', '.0f')} passing (head, seed) cases, {failing} fail the "
              "previous-token control (at the last checkpoint they attend no more to the cue than to the token "
              "before the noun, so their rise may be positional rather than about the cue).", headline=True)
    w.say(f"Which heads: {rule} named them; {ground_truth(w, rule)}.")
    return w.findings



CRITERIA = {"selected": "FDR rule", "diff_ok": "1st-diff", "logstep_ok": "log-step", "perm_ok": "permutation",
            "beats_prev": "> prev-token", "passes": "PASS (the study's selection rule)"}


def _rule(stats: pd.DataFrame) -> str:
    """The selection rule behind ``passes`` (stats from before the setting existed: the default's)."""
    return str(stats["rule"].iloc[0]) if "rule" in stats.columns and len(stats) else RULE_TITLES[DEFAULT_RULE]


def describe(s2: Discovery, earlier: Earlier) -> View:
    """Stage 2's view: the discovery statistic of every head, how many heads meet each criterion, the heads that
    pass."""
    st = s2.stats
    n = st.groupby(["model", "seed"]).size().iloc[0]
    perms = f"{int(st['n_perm'].min())} shuffles, floor {1 / (st['n_perm'].min() + 1):.2g}" if "n_perm" in st else ""
    return View(f"Stage 2 · {STAGE.title}", "stage2", (
        Text(lead(findings(s2, earlier))),
        Figure("head_stat_chart", {"stats": st}, "head discovery statistic per seed", "heads"),
        *([Figure("attention_beside_score", {"trajectories": s2.trajectories, "best": earlier["inflection"].best,
                                             "stats": st, "score": earlier["inflection"].score},
                  "cue attention of the discovered heads beside best-layer R², per seed", "attention-beside-score")]
          if st["passes"].any() and "inflection" in earlier else []),
        Text(f"FDR: BH over the {n} heads of each seed, per criterion (permutation null: {perms}; a lone head needs "
             f"p <= {0.05 / n:.2g}); the previous-token control is a paired one-sided t-test at the last checkpoint. "
             f"Criteria: {'; '.join(f'{k} = {v}' for k, v in CRITERIA.items())}.", note=True),
        Table(st.groupby(["model", "seed"])[list(CRITERIA)].sum().reset_index(),
              f"Heads meeting each criterion per seed (passes = {_rule(st)})"),
        Table(st[st["passes"]][["model", "seed", "layer", "head", "r", "slope", "q", "q_diff", "q_prev", "beats_prev"]],
              "Heads that pass, per seed", keep=("beats_prev",))))



REPORT = Report(describe, findings)
