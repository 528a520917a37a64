"""Disambiguation performance per checkpoint and layer: R^2 of cosine distance vs relatedness (or sense), AUC.

Works on lexprobe's stored ``distances`` (joined to the pair table) and on the long tables published by the
original study (:func:`from_published`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from lexprobe.stimuli import Stimuli

CHECKPOINT_KEYS = ["model", "seed", "step"]
DEGENERATE = 1e-9  # distance ranges below this are numerical noise, not a measurement
PUBLISHED_COLUMNS = ["sentence1", "sentence2", "word", "Same_sense", "Distance", "Layer", "mean_relatedness"]
SAME_SENSE = {"same sense": True, "different sense": False, "same": True, "different": False,
              "true": True, "false": False}
SCORE_OF = {"r2": "r2", "signed": "r2_signed", "auc": "auc"}  # best-layer rule -> the score it maximises
_SEEDED = re.compile(r"^(?P<base>.+)-seed(?P<seed>\d+)$")
_REVISION = re.compile(r"^step(\d+)$")


def with_pairs(distances: pd.DataFrame, stimuli: Stimuli) -> pd.DataFrame:
    """Attach each pair's word, same-sense flag and human relatedness to stored distances."""
    cols = ["pair_id", "word", "same", "mean_relatedness"]
    out = distances.merge(stimuli.pairs[cols], on="pair_id", how="left", validate="many_to_one")
    out["pair_key"] = out["pair_id"]
    return out


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


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half): Mann-Whitney AUC."""
    pos = positive.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


TARGETS = ("relatedness", "same")


def target_of(table: pd.DataFrame) -> str:
    """``relatedness`` when every pair has a human rating, else ``same`` (same/different sense)."""
    return "relatedness" if table["mean_relatedness"].notna().all() else "same"


def performance(table: pd.DataFrame, target: str | None = None) -> pd.DataFrame:
    """Per checkpoint and layer: Pearson ``r`` of cosine distance vs the target, ``r2`` (the original study's
    score, sign-blind), ``r2_signed`` and ``auc``.

    Sign conventions, the same for both targets: ``target="relatedness"`` correlates distance with human
    relatedness, ``"same"`` with the same-sense flag coded 1 = same sense, 0 = different. A layer that separates
    senses the right way puts related / same-sense pairs closer, so its ``r`` is negative; ``r2_signed`` is
    ``-sign(r) * r^2`` (positive the right way, negative the wrong way). ``auc`` is the probability that a
    different-sense pair is farther apart than a same-sense pair (0.5 = chance, 1 = every different-sense pair is
    farther), whatever the target.
    """
    target = target or target_of(table)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    keys = [k for k in ["suite", "stimuli", "condition", *CHECKPOINT_KEYS] if k in table.columns] + ["layer"]
    gid = table.groupby(keys, sort=True).ngroup().to_numpy()
    keep = gid >= 0  # rows with a missing key belong to no group, as in groupby
    table, gid = table[keep], gid[keep]
    n_groups = int(gid.max()) + 1 if len(gid) else 0
    y = (table["mean_relatedness"] if target == "relatedness" else table["same"]).to_numpy(float)
    d = table["distance"].to_numpy(float)
    ok = np.isfinite(y) & np.isfinite(d)
    out = table.iloc[np.unique(gid, return_index=True)[1]][keys].reset_index(drop=True)
    out["r"] = _grouped_r(gid[ok], d[ok], y[ok], n_groups)
    out["r2"] = out["r"] ** 2
    out["r2_signed"] = -np.sign(out["r"]) * out["r2"]
    out["auc"] = _grouped_auc(gid, d, ~table["same"].to_numpy(bool), n_groups)
    out["n_pairs"] = np.bincount(gid[ok], minlength=n_groups)
    out["target"] = target
    return out


def _grouped_r(gid: np.ndarray, d: np.ndarray, y: np.ndarray, n_groups: int) -> np.ndarray:
    """Pearson r of ``d`` and ``y`` within each group (NaN for a group with fewer than 3 rows, a constant ``y``, or
    distances whose range is rounding noise: e.g. layer 0 of a noun in every sentence)."""
    n = np.bincount(gid, minlength=n_groups).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        dc = d - (np.bincount(gid, d, n_groups) / n)[gid]
        yc = y - (np.bincount(gid, y, n_groups) / n)[gid]
        sdd, syy = np.bincount(gid, dc * dc, n_groups), np.bincount(gid, yc * yc, n_groups)
        r = np.bincount(gid, dc * yc, n_groups) / np.sqrt(sdd * syy)
    frame = pd.DataFrame({"g": gid, "d": d, "y": y}).groupby("g")
    span = (frame["d"].max() - frame["d"].min()).reindex(range(n_groups)).to_numpy()
    y_varies = (frame["y"].max() > frame["y"].min()).reindex(range(n_groups), fill_value=False).to_numpy()
    varies = (n > 2) & (span > DEGENERATE) & y_varies & (sdd > 0)
    return np.where(varies, np.clip(r, -1.0, 1.0), np.nan)


def _grouped_auc(gid: np.ndarray, scores: np.ndarray, positive: np.ndarray, n_groups: int) -> np.ndarray:
    """:func:`auc` within each group; NaN for a group with a missing score or without both classes."""
    ranks = pd.Series(scores).groupby(gid).rank(method="average").to_numpy()
    n1 = np.bincount(gid, positive, n_groups)
    n0 = np.bincount(gid, ~positive, n_groups)
    missing = np.bincount(gid, np.isnan(scores), n_groups) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (np.bincount(gid, np.where(positive, ranks, 0.0), n_groups) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where(missing | (n1 == 0) | (n0 == 0), np.nan, value)


def best_layer(perf: pd.DataFrame, exclude_embedding: bool = False, by: str = "r2") -> pd.DataFrame:
    """Each checkpoint's best layer (the row of :func:`performance` for that layer, ``layer`` renamed
    ``best_layer``).

    ``by``: ``"r2"`` (default; the original study's rule: largest R^2, blind to the direction of the correlation),
    ``"signed"`` (the most negative r, i.e. largest ``r2_signed``: a layer that puts different-sense or less
    related pairs *closer* cannot win) or ``"auc"`` (largest AUC of distance for different- vs same-sense pairs).
    The score to follow across training is then ``SCORE_OF[by]`` (r2, r2_signed or auc).
    """
    if by not in SCORE_OF:
        raise ValueError(f"by must be one of {tuple(SCORE_OF)}, not {by!r}")
    metric = SCORE_OF[by]
    p = perf[perf["layer"] > 0] if exclude_embedding else perf
    p = p.dropna(subset=[metric])
    if p.empty:
        raise ValueError(f"no layer has a defined {metric}: distances or the target do not vary (are all pairs "
                         "same-sense, or fewer than 3?)")
    keys = [k for k in ["suite", "stimuli", "condition", *CHECKPOINT_KEYS] if k in p.columns]
    idx = p.groupby(keys)[metric].idxmax()
    return p.loc[idx].rename(columns={"layer": "best_layer"}).reset_index(drop=True)
