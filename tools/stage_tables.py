"""Every table of a finished study, dumped and compared: the check that a refactor changed no number.

    python tools/stage_tables.py dump before.pkl      # on the code before (any API that yields the stages)
    python tools/stage_tables.py dump after.pkl       # on the code after
    python tools/stage_tables.py compare before.pkl after.pkl

``dump`` runs (or reuses) all five stages of ``Study()`` (the organism; LEXPROBE_SMOKE=1: the smoke organism) and
pickles every DataFrame of every stage result plus the supplement's HTML; ``compare`` prints, per table, shape or
column differences and the largest absolute numeric difference, and whether the HTML is identical apart from its
provenance section.
"""

from __future__ import annotations

import dataclasses
import difflib
import pickle
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TOLERANCE = 1e-12
TIMINGS = ("load_seconds", "measure_seconds")  # wall-clock times of the run that measured a unit: not results


def tables_of(name: str, obj: Any, out: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every DataFrame field of a stage result (nested dataclasses included), named ``stage.field``."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, pd.DataFrame):
            out[f"{name}.{f.name}"] = value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type) and f.name != "config":
            tables_of(f"{name}.{f.name}", value, out)
    return out


def dump(path: str) -> None:
    from lexprobe import Study
    from lexprobe.supplement import write_report

    study = Study(progress=False)
    stages = {"s1": study.inflection, "s2": study.discovery, "s3": study.perturbation, "s4": study.causal,
              "s5": study.replication}  # the names of older dumps
    out: dict[str, pd.DataFrame] = {}
    for name, stage in stages.items():
        tables_of(name, stage, out)
    with tempfile.TemporaryDirectory() as tmp:  # the report exactly as `lexprobe report` writes it
        html = write_report(study, Path(tmp) / "report.html", "cmd").read_text(encoding="utf-8")
    with open(path, "wb") as fh:
        pickle.dump({"tables": out, "html": html}, fh)
    print(f"dumped {len(out)} tables to {path}")


def aligned(ta: dict[str, pd.DataFrame], tb: dict[str, pd.DataFrame]
            ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Both dumps' tables under common names: a table whose full name is in one dump only is matched by its stage
    and its own name (``s4.tests`` and ``s4.ablation.tests``: a refactor nested it), when that pair is unique."""
    def short(name: str) -> str:
        parts = name.split(".")
        return f"{parts[0]}.{parts[-1]}"

    lone_a, lone_b = set(ta) - set(tb), set(tb) - set(ta)
    by_a = {short(k): k for k in lone_a}
    by_b = {short(k): k for k in lone_b}
    rename = {by_b[s]: by_a[s] for s in set(by_a) & set(by_b)
              if sum(short(k) == s for k in lone_a) == 1 and sum(short(k) == s for k in lone_b) == 1}
    for new, old in sorted(rename.items()):
        print(f"matched {old} with {new}")
    return ta, {rename.get(k, k): v for k, v in tb.items()}


def compare(a_path: str, b_path: str) -> bool:
    with open(a_path, "rb") as fa, open(b_path, "rb") as fb:
        a, b = pickle.load(fa), pickle.load(fb)
    ta, tb = aligned(a["tables"], b["tables"])
    only = {k: v for k, v in (*((k, ta[k]) for k in set(ta) - set(tb)), *((k, tb[k]) for k in set(tb) - set(ta)))}
    ok = all(v.empty for v in only.values())  # a table added or dropped empty changes no number
    print("only in the first:", sorted(set(ta) - set(tb)), "only in the second:", sorted(set(tb) - set(ta)),
          "(all empty)" if only and ok else "")
    worst = 0.0
    for k in sorted(set(ta) & set(tb)):
        x, y = ta[k].reset_index(drop=True), tb[k].reset_index(drop=True)
        if x.shape != y.shape or list(x.columns) != list(y.columns):
            print(f"{k}: shape {x.shape} vs {y.shape}, columns differing: {sorted(set(x.columns) ^ set(y.columns))}")
            ok &= k.endswith(".status")  # extraction status rows carry timings only when measured in that run
            continue
        num = [c for c in x.select_dtypes("number").columns if c not in TIMINGS]
        if len(num) and len(x):
            d = np.abs(x[num].to_numpy(float) - y[num].to_numpy(float))
            worst = max(worst, float(np.nanmax(d)) if np.isfinite(d).any() else 0.0)
        other = [c for c in x.columns if c not in num and c not in TIMINGS]
        if not x[other].astype(str).equals(y[other].astype(str)):
            print(f"{k}: non-numeric columns differ")
            ok = False
    print(f"largest absolute numeric difference over {len(set(ta) & set(tb))} tables: {worst:.3g} (columns "
          f"{', '.join(TIMINGS)} left out: wall-clock times)")

    def strip(h: str) -> str:
        return re.sub(r'<h2 id="provenance">.*', "", h, flags=re.S)

    same_html = strip(a["html"]) == strip(b["html"])
    print("HTML identical apart from provenance:", same_html)
    if not same_html:
        old, new = strip(a["html"]).splitlines(), strip(b["html"]).splitlines()
        gone = [line for line in difflib.ndiff(old, new) if line.startswith("- ")]
        added = [line for line in difflib.ndiff(old, new) if line.startswith("+ ")]
        print(f"HTML lines only in the first: {len(gone)}; only in the second: {len(added)}")
        for line in (gone + added)[:40]:
            print("  " + line[:160])
    return ok and worst <= TOLERANCE and same_html


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "dump":
        dump(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(0 if compare(sys.argv[2], sys.argv[3]) else 1)
    else:
        sys.exit(__doc__)
