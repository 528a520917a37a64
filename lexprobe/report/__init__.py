"""The report layer: what each stage shows (its :class:`~lexprobe.base.view.View`) and says (its findings in words),
kept outside every stage's cache key.

Each stage ``NAME`` has one module here, ``lexprobe/report/NAME_report.py``, whose ``REPORT`` is a :class:`Report`:
``describe(result, earlier)`` and ``findings(result, earlier)``, where ``earlier`` holds the outcomes of the stages
it needs (a result, or :class:`~lexprobe.stages.registry.Skipped`), by name. Stages never import this package (an
import contract), so rewording a sentence changes no stage's cache key and recomputes nothing. The terminal
(:func:`lexprobe.views.text.render_text`), the HTML supplement (:mod:`lexprobe.supplement`) and the notebooks render
the same views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pandas as pd

from lexprobe.base.view import Text, View
from lexprobe.report.findings import Finding
from lexprobe.stages import STAGES
from lexprobe.stages.registry import Skipped

if TYPE_CHECKING:
    from lexprobe.study import Study

R = TypeVar("R")
Earlier = dict[str, Any]  # the outcomes of the stages a stage needs, by name


def _no_findings(result: Any, earlier: Earlier) -> list[Finding]:
    return []


@dataclass(frozen=True)
class Report(Generic[R]):
    """How a stage's result reads: its view, its findings (the first one leads the supplement's abstract) and the
    view of the stage when it is skipped (by default its label and the reason)."""

    describe: Callable[[R, Earlier], View]
    findings: Callable[[R, Earlier], list[Finding]] = _no_findings
    skipped: Callable[[str, str], View] = field(default=View.skipped_because)


REPORTS: dict[str, Report[Any]] = {}  # filled on first use from each stage's report module (tests add their own)


def report_of(name: str) -> Report[Any]:
    """The report of the stage called ``name`` (``lexprobe.report.NAME_report.REPORT``)."""
    if name not in REPORTS:
        if name not in STAGES:
            raise KeyError(f"no stage named {name!r}; the stages are {list(STAGES)}")
        REPORTS[name] = import_module(f"lexprobe.report.{name}_report").REPORT
    return REPORTS[name]


def left_out(parts: pd.DataFrame) -> list[Text]:
    """A line per part of a stage left out because an earlier stage it uses was skipped (a result's
    ``parts_skipped``)."""
    return [Text(f"Left out: {r.part} (needs {r.needs}, skipped: {r.reason}).") for r in parts.itertuples()]


def view(study: Study, name: str) -> View:
    """The view of stage ``name`` of ``study`` (run, or read from the stage cache, first); a skipped stage's view says
    why it has nothing to show."""
    out, report = study.outcome(name), report_of(name)
    if isinstance(out, Skipped):
        return report.skipped(STAGES[name].label, out.reason)
    return report.describe(out, study.earlier(name))


def findings_of(study: Study, name: str) -> list[Finding]:
    """The findings of stage ``name`` of ``study`` (none for a skipped stage)."""
    out = study.outcome(name)
    return [] if isinstance(out, Skipped) else report_of(name).findings(out, study.earlier(name))
