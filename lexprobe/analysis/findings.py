"""Findings in words: what each stage's tables show, in sentences generated from them (never written by hand).

Every number a sentence quotes is a :class:`Quote`: the table (a field of the stage's result), the rows
(column == value), the column and how the rows are reduced, so that :func:`read_back` can compute it again from the
result and a test can check the sentence against its table. Identifiers (``seed 3``, ``L1H2``) are not quotes.
Negative results are said as such, and a test that cannot reach its threshold is called underpowered, not negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lexprobe.analysis.selection import ALPHA

MAX_NAMED = 6  # heads named in a sentence; more are counted
CONSTANTS = {"alpha": ALPHA}  # the study's fixed thresholds a sentence may quote (table ``=name``)


@dataclass(frozen=True)
class Quote:
    """One number in a finding: ``how`` reduces ``column`` over the rows of ``table`` where every ``where`` column
    equals its value (or, for a value ``(">", x)`` / ``("<", x)``, compares so): ``value`` (the one row),
    ``count`` (rows where it is true), ``rows``, ``distinct`` (values),
    ``below`` (rows under ``ALPHA``), ``min``, ``max``, ``median``; ``table`` ``@name`` quotes an attribute of the
    result, ``=name`` one of :data:`CONSTANTS`."""

    table: str
    where: tuple[tuple[str, Any], ...]
    column: str
    how: str
    fmt: str
    text: str


@dataclass(frozen=True)
class Finding:
    """A sentence and the numbers it quotes, in order."""

    text: str
    quotes: tuple[Quote, ...]


def table_of(result: Any, table: str) -> pd.DataFrame:
    """A stage result's table by its (dotted) field name, e.g. ``inflection`` or ``mixed.fixed``."""
    obj = result
    for part in table.split("."):
        obj = getattr(obj, part)
    return obj


def read_back(result: Any, quote: Quote) -> float:
    """The value a quote stands for, computed again from the stage result."""
    if quote.table.startswith("@"):
        return float(getattr(result, quote.table[1:]))
    if quote.table.startswith("="):
        return float(CONSTANTS[quote.table[1:]])
    rows = table_of(result, quote.table)
    for column, value in quote.where:
        if isinstance(value, tuple):  # (">", 0) or ("<", alpha): a comparison rather than equality
            op, bound = value
            rows = rows[rows[column] > bound] if op == ">" else rows[rows[column] < bound]
        else:
            rows = rows[rows[column] == value]
    col = rows[quote.column] if quote.column else None
    if quote.how == "value":
        if len(rows) != 1:
            raise ValueError(f"quote of {quote.table}.{quote.column} where {quote.where}: {len(rows)} rows, not 1")
        return float(col.iloc[0])  # type: ignore[union-attr]  # a value quote names its column
    reduce = {"count": lambda c: int(c.fillna(False).astype(bool).sum()), "rows": lambda c: len(rows),
              "distinct": lambda c: c.nunique(), "below": lambda c: int((c < ALPHA).sum()),
              "min": lambda c: float(c.min()), "max": lambda c: float(c.max()),
              "median": lambda c: float(c.median())}
    return float(reduce[quote.how](col))


class Writer:
    """Builds findings: :meth:`num` formats a number read from the result and records its quote."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.quotes: list[Quote] = []
        self.findings: list[Finding] = []

    def num(self, table: str, column: str = "", how: str = "value", fmt: str = ".3f", **where: Any) -> str:
        """A quoted number, formatted with ``fmt``."""
        q = Quote(table, tuple(where.items()), column, how, fmt, "")
        text = format(read_back(self.result, q), fmt)
        self.quotes.append(Quote(table, q.where, column, how, fmt, text))
        return text

    def say(self, text: str) -> None:
        """End a finding: the sentence and the quotes recorded since the last one."""
        self.findings.append(Finding(text, tuple(self.quotes)))
        self.quotes = []


def _seeds(ids: list[int]) -> str:
    """Seed identifiers in words: 'seeds 0, 2 and 3'."""
    if not ids:
        return "no seed"
    names = [str(i) for i in ids]
    return ("seed " if len(ids) == 1 else "seeds ") + (names[0] if len(ids) == 1 else
                                                       ", ".join(names[:-1]) + " and " + names[-1])


def inflection(s1: Any) -> list[Finding]:
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
        text += f"; no onset was found in {_seeds(flat)} (no rise the curve models can place)"
    w.say(text + " (item-bootstrap intervals).")
    last = int(s1.best["step"].max())
    w.say(f"At the last checkpoint (step {w.num('best', 'step', 'max', '.0f')}) best-layer {score} is "
          f"{w.num('best', s1.score, 'median', '.3f', step=last)} (median over "
          f"{w.num('best', 'seed', 'distinct', '.0f', step=last)} seeds; range "
          f"{w.num('best', s1.score, 'min', '.3f', step=last)} to {w.num('best', s1.score, 'max', '.3f', step=last)}).")
    if getattr(s1, "onset", None) is not None:
        w.say(f"The organism's circuit was planted to open at step {w.num('@onset', fmt='.0f')}.")
    return w.findings


def discovery(s2: Any) -> list[Finding]:
    """How many seeds have heads that pass discovery, and which."""
    w = Writer(s2)
    n = w.num("stats", "seed", "distinct", ".0f")
    with_heads = w.num("stats", "seed", "distinct", ".0f", passes=True)
    per = []
    for (model, sd), g in s2.stats.groupby(["model", "seed"]):
        heads = [f"L{r.layer}H{r.head}" for r in g.itertuples() if r.passes]
        count = w.num("stats", "passes", "count", ".0f", model=model, seed=sd)
        named = f" ({', '.join(heads)})" if 0 < len(heads) <= MAX_NAMED else ""
        per.append(f"seed {sd}: {count}{named}")
    w.say(f"Heads whose attention from the noun to its cue rises with disambiguation across training (original rule "
          f"and trend control, BH-FDR) pass in {with_heads} of {n} seeds; heads per seed: {'; '.join(per)}.")
    return w.findings


def perturbation(s3: Any) -> list[Finding]:
    """How much of the intact score each moved cue keeps, and how many discovered heads stay on the cue."""
    w = Writer(s3)
    last = int(s3.retained["step"].max())
    kept = []
    for p in sorted(s3.retained["perturbation"].unique()):
        kept.append(f"{p} {w.num('retained', 'r2_retained', 'median', '.0%', step=last, perturbation=p)}")
    w.say(f"At the last checkpoint the perturbed sets keep this median share of the intact best-layer R² across "
          f"seeds: {'; '.join(kept)}.")
    heads = s3.heads[(s3.heads["step"] == last) & s3.heads["discovered"].fillna(False).astype(bool)]
    if heads.empty:
        w.say("No head passed discovery, so no head's cue attention is tested under perturbation.")
        return w.findings
    moved = w.num("heads", "passes", "count", ".0f", step=last, discovered=True, role="perturbation")
    tests = w.num("heads", "passes", "rows", ".0f", step=last, discovered=True, role="perturbation")
    text = (f"Of {tests} tests of discovered heads against moved cues at the last checkpoint, {moved} find the head "
            "still attending to the cue more than to the word now in its place (robust)")
    if (heads["role"] == "control").any():
        spec = w.num("heads", "passes", "count", ".0f", step=last, discovered=True, role="control")
        n_ctl = w.num("heads", "passes", "rows", ".0f", step=last, discovered=True, role="control")
        text += (f"; in the neutral-word control, {spec} of {n_ctl} attend to the informative cue more than to a "
                 "neutral modifier")
    w.say(text + ".")
    return w.findings


def causal(s4: Any) -> list[Finding]:
    """Necessity and sufficiency of single heads by patching, the greedy sets, and the study's QK edits."""
    w = Writer(s4)
    maps = s4.patch_maps
    if len(maps):
        last = int(maps["step"].max())
        heads = maps[(maps["unit"] == "head") & (maps["step"] == last)]
        for direction, word in (("noise", "necessary (noising)"), ("denoise", "sufficient (denoising)")):
            d = heads[heads["direction"] == direction]
            none = sorted(int(s) for s, g in d.groupby("seed") if not g["significant"].any())
            found = w.num("patch_maps", "significant", "count", ".0f", step=last, unit="head", direction=direction)
            w.say(f"Single heads {word} at the last checkpoint after BH-FDR: {found} (head, seed) cases in all; "
                  f"none in {_seeds(none)}.")
    greedy = s4.greedy_tests
    if len(greedy) and (greedy["size"] > 0).any():
        last = int(greedy["step"].max())
        reached = greedy[(greedy["step"] == last) & greedy["reached"].astype(bool)]
        if len(reached):
            w.say(f"At step {w.num('greedy_tests', 'step', 'max', '.0f')} the greedy sufficient sets need "
                  f"{w.num('greedy_tests', 'size', 'min', '.0f', step=last, reached=True)} to "
                  f"{w.num('greedy_tests', 'size', 'max', '.0f', step=last, reached=True)} heads jointly to reach the "
                  f"recovery target, in {w.num('greedy_tests', 'seed', 'distinct', '.0f', step=last, reached=True)} "
                  f"of {w.num('greedy_tests', 'seed', 'distinct', '.0f', step=last)} seeds (chosen on these pairs: "
                  "descriptive, not a test).")
        else:
            w.say(f"At step {w.num('greedy_tests', 'step', 'max', '.0f')} no greedy set reaches the recovery target.")
    tests = s4.tests
    if len(tests):
        last = int(tests["step"].max())
        for family in sorted(tests["family"].unique()):
            g = tests[(tests["family"] == family) & (tests["step"] == last)]
            if g.empty:
                continue
            text = (f"{family} of the discovered heads at the last checkpoint: median drop in R² "
                    f"{w.num('tests', 'drop_r2', 'median', '.3f', family=family, step=last)}; below p = "
                    f"{w.num('=alpha', fmt='g')} "
                    f"against random same-size sets in {w.num('tests', 'p', 'below', '.0f', family=family, step=last)}"
                    f" of {w.num('tests', 'p', 'rows', '.0f', family=family, step=last)} seeds")
            floor = g["p_floor"].max() if "p_floor" in g else np.nan
            if np.isfinite(floor) and floor > ALPHA:
                text += " (underpowered: too few random sets for a rank test to reach the threshold)"
            w.say(text + ".")
    reg = getattr(s4, "regression", None)
    if reg is not None and len(reg):
        for family in sorted(reg["family"].unique()):
            alpha = w.num("=alpha", fmt="g")
            more = w.num("regression", "seed", "rows", ".0f", family=family, target_coef=(">", 0),
                         target_p=("<", ALPHA))
            seeds = w.num("regression", "seed", "rows", ".0f", family=family)
            less = w.num("regression", "seed", "rows", ".0f", family=family, target_coef=("<", 0),
                         target_p=("<", ALPHA))
            w.say(f"Across checkpoints (the original study's regression of the drop on log step and discovered vs "
                  f"random), {family} of the discovered heads drops R² more than random sets with p < {alpha} in "
                  f"{more} of {seeds} seeds and less in {less}.")
    return w.findings


def replication(s5: Any) -> list[Finding]:
    """Whether seeds agree on when (Cochran's Q over onsets) and on which heads (Jaccard vs permutation nulls)."""
    w = Writer(s5)
    for r in s5.spread.itertuples():
        key = {"model": r.model}
        if r.n_tested < 2 or not pd.notna(r.p):
            w.say("Too few seeds with an onset interval to test whether seeds differ.")
            continue
        differ = "differ more than their intervals allow" if r.p < ALPHA else "do not differ beyond their intervals"
        w.say(f"Onsets range from step {w.num('spread', 'min_onset_step', fmt='.0f', **key)} to "
              f"{w.num('spread', 'max_onset_step', fmt='.0f', **key)} across seeds; Cochran's Q = "
              f"{w.num('spread', 'Q', fmt='.1f', **key)} (p = {w.num('spread', 'p', fmt='.2g', **key)}): the seeds "
              f"{differ}.")
    for r in s5.heads.itertuples():
        key = {"model": r.model}
        if r.seeds_with_heads < 2 or not pd.notna(r.jaccard):
            w.say("Fewer than two seeds have passing heads, so head agreement cannot be measured.")
            continue
        agree = "more than chance" if r.p_anywhere < ALPHA else "no more than chance"
        within = ("so the seeds agree on heads, not only on layers" if r.p_within_layer < ALPHA
                  else "so what they share is explained by the layers they pick")
        w.say(f"Seeds share discovered heads {agree}: mean Jaccard {w.num('heads', 'jaccard', fmt='.2f', **key)} "
              f"against {w.num('heads', 'null_anywhere_mean', fmt='.2f', **key)} for heads drawn anywhere (p = "
              f"{w.num('heads', 'p_anywhere', fmt='.2g', **key)}) and "
              f"{w.num('heads', 'null_within_layer_mean', fmt='.2f', **key)} for heads drawn within the same layers "
              f"(p = {w.num('heads', 'p_within_layer', fmt='.2g', **key)}), {within}.")
    return w.findings


def lead(findings: list[Finding]) -> str:
    """A stage's findings as the paragraph that leads its view (in the report and in the terminal)."""
    return "Findings. " + " ".join(f.text for f in findings)


def abstract(stages: dict[str, list[Finding]]) -> str:
    """The report's abstract: the first finding of every stage that ran, in stage order."""
    return " ".join(found[0].text for found in stages.values() if found)
