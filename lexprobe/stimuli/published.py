"""The original study's published distance tables, read as published: one row per pair x layer x checkpoint.

A data-layer reader (pandas and numpy only). It returns the columns that
:func:`lexprobe.analysis.performance.performance` reads (``model, seed, step, layer, word, pair_key, distance, same,
mean_relatedness``), named as in lexprobe's own distances joined to their pairs, so both are scored alike.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

PUBLISHED_COLUMNS = ["sentence1", "sentence2", "word", "Same_sense", "Distance", "Layer", "mean_relatedness"]
SAME_SENSE = {"same sense": True, "different sense": False, "same": True, "different": False,
              "true": True, "false": False}
_SEEDED = re.compile(r"^(?P<base>.+)-seed(?P<seed>\d+)$")
_REVISION = re.compile(r"^step(\d+)$")


class _Cells:
    """Cell parsing for one published table; errors name the row (file line or 1-based data row) and column."""

    def __init__(self, df: pd.DataFrame, source: str | None):
        self.df, self.source = df.reset_index(drop=True), source

    def where(self, i: int, col: str) -> str:
        row = f"{self.source}: line {i + 2} (data row {i + 1})" if self.source else f"data row {i + 1}"
        return f"{row}, column {col!r}"

    def fail(self, bad: np.ndarray, col: str, what: str) -> None:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"published table, {self.where(i, col)}: {self.df[col].iloc[i]!r} is not {what}"
                             + (f" ({int(bad.sum())} bad cells in this column)" if bad.sum() > 1 else ""))

    def text(self, col: str) -> pd.Series:
        s = self.df[col]
        self.fail((s.isna() | (s.astype(str).str.strip() == "")).to_numpy(), col, "a non-empty text")
        return s.astype(str).str.strip()

    def number(self, col: str, integer: bool = False, missing_ok: bool = False) -> pd.Series:
        raw = self.df[col]
        empty = raw.isna() | (raw.astype(str).str.strip().isin(["", "NA", "NaN", "nan"]))
        num = pd.to_numeric(raw.where(~empty), errors="coerce").astype(float)
        bad = (~empty & ~np.isfinite(num)) | (empty & (not missing_ok))
        what = "a number"
        if integer:
            bad |= ~empty & np.isfinite(num) & ((num % 1 != 0) | (num < 0))
            what = "a non-negative integer"
        self.fail(bad.to_numpy(), col, what)
        return num

    def same_sense(self) -> pd.Series:
        s = self.df["Same_sense"]
        if pd.api.types.is_bool_dtype(s):
            return s.astype(bool)
        same = s.astype(str).str.strip().str.lower().map(SAME_SENSE)
        self.fail(same.isna().to_numpy(), "Same_sense", "'Same Sense' or 'Different Sense'")
        return same.astype(bool)

    def step(self) -> pd.Series:
        has_step, has_rev = "step" in self.df, "revision" in self.df
        if not has_step and not has_rev:
            raise ValueError("published table has neither a 'step' nor a 'revision' column")
        rev = None
        if has_rev:
            text = self.text("revision")
            rev = pd.to_numeric(text.str.extract(_REVISION, expand=False), errors="coerce")
            self.fail(rev.isna().to_numpy(), "revision", "a revision 'stepN'")
        if not has_step:
            assert rev is not None  # has_rev
            return rev.astype(int)
        step = self.number("step", integer=True).astype(int)
        if rev is not None:
            self.fail((rev != step).to_numpy(), "revision", "the same step as column 'step'")
        return step

    def model_seed(self, model: str | None) -> tuple[pd.Series, pd.Series]:
        n = len(self.df)
        seed = self.number("seed", integer=True).astype(int) if "seed" in self.df else None
        if "seed_name" in self.df:
            named = pd.to_numeric(self.text("seed_name").str.extract(r"^seed(\d+)$", expand=False), errors="coerce")
            self.fail(named.isna().to_numpy() | ((seed is not None) & (named != seed)).to_numpy(), "seed_name",
                      "'seedN' matching column 'seed'")
            seed = named.astype(int) if seed is None else seed
        if "mpath" not in self.df:
            return pd.Series([model or "published"] * n), seed if seed is not None else pd.Series(np.zeros(n, int))
        name = self.text("mpath").str.rsplit("/", n=1).str[-1]
        parts = name.str.extract(_SEEDED)
        base = parts["base"].fillna(name)
        path_seed = pd.to_numeric(parts["seed"], errors="coerce")
        if seed is not None:
            self.fail((path_seed.notna() & (path_seed != seed)).to_numpy(), "mpath",
                      "a repository whose -seedN suffix matches column 'seed'")
        else:
            seed = path_seed.fillna(0).astype(int)
        if model is not None:
            self.fail((base != model).to_numpy(), "mpath", f"model {model!r} (the model= argument)")
        return base, seed


def _read_published(df: pd.DataFrame, source: str | None, model: str | None) -> pd.DataFrame:
    missing = [c for c in PUBLISHED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"published table{' ' + source if source else ''} lacks columns {missing}; expected "
                         f"{PUBLISHED_COLUMNS} and step or revision (+ optional string, mpath, seed)")
    cells = _Cells(df, source)
    models, seeds = cells.model_seed(model)
    out = pd.DataFrame({
        "model": models, "seed": seeds, "step": cells.step(), "layer": cells.number("Layer", integer=True).astype(int),
        "word": cells.text("word"), "pair_key": cells.text("sentence1") + " || " + cells.text("sentence2"),
        "distance": cells.number("Distance"), "same": cells.same_sense(),
        "mean_relatedness": cells.number("mean_relatedness", missing_ok=True),
    })
    dup = out.duplicated(["model", "seed", "step", "layer", "pair_key"], keep=False).to_numpy()
    if dup.any():
        first, second = np.flatnonzero(dup)[:2]
        raise ValueError(f"published table: {cells.where(int(second), 'sentence1')} repeats the pair, model, seed, "
                         f"step and layer of {cells.where(int(first), 'sentence1').split(', column')[0]}")
    return out


def from_published(source: pd.DataFrame | str | Path | list, model: str | None = None) -> pd.DataFrame:
    """Read the original study's long distance tables (one row per pair x layer x checkpoint), as published.

    ``source``: a DataFrame, a CSV path, or a list of them. Columns used: ``sentence1, sentence2, word,
    Same_sense`` ("Same Sense" / "Different Sense"), ``Distance, Layer, mean_relatedness`` and ``step`` or
    ``revision`` ("stepN"); optional ``mpath`` (the model name is its last part, e.g. ``EleutherAI/pythia-14m`` ->
    ``pythia-14m``; a ``-seedN`` suffix, as in PolyPythia's ``pythia-14m-seed3``, gives seed N), ``seed`` and
    ``seed_name`` ("seedN"), which must agree with each other and with ``mpath``; other columns are ignored.
    Without ``mpath`` the model is ``model`` (default "published"); without any seed column the seed is 0.
    Any bad cell raises a ValueError naming its row (file line for CSVs) and column.
    """
    if isinstance(source, (list, tuple)):
        parts = [from_published(s, model) for s in source]
        out = pd.concat(parts, ignore_index=True)
        dup = out.duplicated(["model", "seed", "step", "layer", "pair_key"])
        if dup.any():
            r = out[dup].iloc[0]
            raise ValueError(f"published tables overlap: model {r['model']} seed {r['seed']} step {r['step']} "
                             f"layer {r['layer']} pair {r['pair_key']!r} appears in more than one")
        return out
    if isinstance(source, pd.DataFrame):
        return _read_published(source, None, model)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"published table {path} does not exist")
    return _read_published(pd.read_csv(path, dtype=str, keep_default_na=False), str(path), model)
