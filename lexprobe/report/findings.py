"""Findings in words: what each stage's tables show, in sentences generated from them (never written by hand).

Every number a sentence quotes is a :class:`Quote`: the table (a field of the stage's result), the rows
(column == value), the column and how the rows are reduced, so that :func:`read_back` can compute it again from the
result and a test can check the sentence against its table. Identifiers (``seed 3``, ``L1H2``) are not quotes.
Negative results are said as such, and a test that cannot reach its threshold is called underpowered, not negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from lexprobe.analysis import groundtruth
from lexprobe.analysis.selection import ALPHA

MAX_NAMED = 6  # heads named in a sentence; more are counted
CONSTANTS = {"alpha": ALPHA}  # the study's fixed thresholds a sentence may quote (table ``=name``)


@dataclass(frozen=True)
class Quote:
    """One number in a finding: ``how`` reduces ``column`` over the rows of ``table`` where every ``where`` column
    equals its value (or, for a value ``(">", x)`` / ``("<", x)``, compares so): ``value`` (the one row),
    ``count`` (rows where it is true), ``rows``, ``distinct`` (values),
    ``below`` (rows under ``ALPHA``), ``min``, ``max``, ``median``, ``sum``; ``table`` ``@name`` quotes an attribute
    of the result, ``=name`` one of :data:`CONSTANTS`, ``SHIPPED`` the methods' shipped scores."""

    table: str
    where: tuple[tuple[str, Any], ...]
    column: str
    how: str
    fmt: str
    text: str


@dataclass(frozen=True)
class Finding:
    """A sentence and the numbers it quotes, in order; ``headline``: the abstract states it."""

    text: str
    quotes: tuple[Quote, ...]
    headline: bool = False


SHIPPED = "~ground truth"  # the table name of the methods' shipped scores on the planted ground truth


def table_of(result: Any, table: str) -> pd.DataFrame:
    """A stage result's table by its (dotted) field name, e.g. ``inflection`` or ``mixed.fixed``; ``SHIPPED``: the
    head-finding methods' scores on the planted ground truth (:mod:`lexprobe.analysis.groundtruth`)."""
    if table == SHIPPED:
        return groundtruth.shipped()
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
              "median": lambda c: float(c.median()), "sum": lambda c: float(c.astype(float).sum())}
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

    def say(self, text: str, headline: bool = False) -> None:
        """End a finding: the sentence and the quotes recorded since the last one (``headline``: in the abstract)."""
        self.findings.append(Finding(text, tuple(self.quotes), headline))
        self.quotes = []


def ground_truth(w: Writer, method: str, name: str = "") -> str:
    """A clause quoting ``method``'s shipped precision and recall on the planted ground truth (and its decoy
    false-positive rate), or saying they are not measured; ``name``: how the sentence calls the method (default
    its table name)."""
    name = name or method
    row = groundtruth.row(method)
    if row is None:
        return (f"the precision and recall of {name} on the planted ground truth are not shipped with this "
                f"version (`lexprobe validate --rules --write`)")
    where = {"split": groundtruth.QUOTED_SPLIT, "rule": method}

    def num(column: str, fmt: str = ".2f") -> str:
        return "-" if pd.isna(row[column]) else w.num(SHIPPED, column, "value", fmt, **where)

    fpr = "" if pd.isna(row.get("decoy_fpr")) else f", and names {num('decoy_fpr', '.0%')} of the certified decoy heads"
    return (f"on the planted ground truth ({w.num(SHIPPED, 'units', 'value', '.0f', **where)} organism seeds with "
            f"known carriers; {groundtruth.SOURCE}) {name} has precision {num('precision')} "
            f"[{num('precision_low')}, {num('precision_high')}] and recall {num('recall')} [{num('recall_low')}, "
            f"{num('recall_high')}]{fpr}")


def seeds_in_words(ids: list[int]) -> str:
    """Seed identifiers in words: 'seeds 0, 2 and 3'."""
    if not ids:
        return "no seed"
    names = [str(i) for i in ids]
    return ("seed " if len(ids) == 1 else "seeds ") + (names[0] if len(ids) == 1 else
                                                       ", ".join(names[:-1]) + " and " + names[-1])


def lead(findings: list[Finding]) -> str:
    """A stage's findings as the paragraph that leads its view (in the report and in the terminal)."""
    return "Findings. " + " ".join(f.text for f in findings)


def headlines(found: list[Finding]) -> list[Finding]:
    """The findings a stage states in the abstract: those marked ``headline`` (its main result, negative or not),
    else its first."""
    return [f for f in found if f.headline] or found[:1]


def abstract(stages: dict[str, list[Finding]]) -> str:
    """The report's abstract: the headline findings of every stage that ran, in stage order, then those of the
    conclusion (``stages`` may hold it last)."""
    return " ".join(f.text for found in stages.values() for f in headlines(found))
