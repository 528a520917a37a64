"""The head-finding methods' measured precision and recall on the planted ground truth, shipped with lexprobe.

``lexprobe validate --rules --write`` scores every method on every planted profile (protocol 3 of
docs/validation.md) and writes the table to ``data/validation/methods.csv``, with the command, the date and the
two decisions in ``methods.json`` beside it. The stage 2 and stage 4 findings quote a method's row from there, so
that a report on any suite says how well the method that named its heads finds known heads.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd

from lexprobe.base.paths import data_dir

QUOTED_SPLIT = "all"  # the split the findings quote: every (profile, seed) unit measured
SOURCE = "`lexprobe validate --rules`, shipped in data/validation/methods.csv"  # how the findings cite it


def scores_path() -> Path:
    """Where the shipped method scores live."""
    return data_dir() / "validation" / "methods.csv"


def write_scores(table: pd.DataFrame, decisions: dict[str, str], command: str) -> Path:
    """Write the method table of :func:`lexprobe.analysis.detection.choose_and_confirm` and its provenance."""
    path = scores_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.4f")
    path.with_suffix(".json").write_text(json.dumps({"command": command, "date": date.today().isoformat(),
                                                     "decisions": decisions}, indent=1) + "\n")
    return path


def shipped() -> pd.DataFrame:
    """The shipped method table (empty when none is shipped)."""
    path = scores_path()
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["split", "rule"])


def row(method: str) -> pd.Series | None:
    """``method``'s row of the quoted split, or None when it has none."""
    table = shipped()
    rows = table[(table["split"] == QUOTED_SPLIT) & (table["rule"] == method)]
    return rows.iloc[0] if len(rows) else None

