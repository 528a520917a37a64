"""Disambiguation performance per checkpoint and layer: R^2 of cosine distance vs relatedness (or sense), AUC.

Works on lexprobe's stored ``distances`` (joined to the pair table) and on the long tables published by the
original study (:func:`from_published`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from lexprobe.stimuli import Stimuli

CHECKPOINT_KEYS = ["model", "seed", "step"]
DEGENERATE = 1e-9  # distance ranges below this are numerical noise, not a measurement
PUBLISHED_COLUMNS = ["sentence1", "sentence2", "word", "string", "Same_sense", "Distance", "Layer",
                     "mean_relatedness", "step"]


def with_pairs(distances: pd.DataFrame, stimuli: Stimuli) -> pd.DataFrame:
    """Attach each pair's word, same-sense flag and human relatedness to stored distances."""
    cols = ["pair_id", "word", "same", "mean_relatedness"]
    out = distances.merge(stimuli.pairs[cols], on="pair_id", how="left", validate="many_to_one")
    out["pair_key"] = out["pair_id"]
    return out


def from_published(df: pd.DataFrame, model: str = "published") -> pd.DataFrame:
    """Normalise the original study's long table (one row per pair x layer x step [x seed])."""
    missing = [c for c in PUBLISHED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"published table lacks columns {missing}; expected {PUBLISHED_COLUMNS} (+ optional seed)")
    same = df["Same_sense"]
    if not pd.api.types.is_bool_dtype(same):
        same = same.astype(str).str.strip().str.lower().map({"same": True, "true": True, "1": True,
                                                              "different": False, "false": False, "0": False})
        if same.isna().any():
            bad = df.loc[same.isna(), "Same_sense"].iloc[0]
            raise ValueError(f"Same_sense value {bad!r} (row {same.isna().idxmax()}) is not Same/Different/True/False")
    out = pd.DataFrame({
        "model": model, "seed": df["seed"].astype(int) if "seed" in df.columns else 0,
        "step": df["step"].astype(int), "layer": df["Layer"].astype(int),
        "word": df["word"], "pair_key": df["sentence1"] + " || " + df["sentence2"],
        "distance": df["Distance"].astype(float), "same": same.astype(bool),
        "mean_relatedness": pd.to_numeric(df["mean_relatedness"], errors="coerce"),
    })
    return out


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half): Mann-Whitney AUC."""
    pos = positive.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _score(g: pd.DataFrame, target: str) -> pd.Series:
    y = g["mean_relatedness"].to_numpy(float) if target == "relatedness" else g["same"].to_numpy(float)
    d = g["distance"].to_numpy(float)
    ok = np.isfinite(y) & np.isfinite(d)
    # identical embeddings (e.g. layer 0 of a noun in every sentence) give distances that are rounding noise
    varies = ok.sum() > 2 and np.ptp(d[ok]) > DEGENERATE and y[ok].std() > 0
    r = np.corrcoef(d[ok], y[ok])[0, 1] if varies else np.nan
    return pd.Series({"r": r, "r2": r * r, "auc": auc(d, ~g["same"].to_numpy(bool)), "n_pairs": int(ok.sum())})


def target_of(table: pd.DataFrame) -> str:
    """``relatedness`` when every pair has a human rating, else ``same`` (same/different sense)."""
    return "relatedness" if table["mean_relatedness"].notna().all() else "same"


def performance(table: pd.DataFrame, target: str | None = None) -> pd.DataFrame:
    """Per checkpoint and layer: Pearson r and R^2 of distance vs target, and the AUC of distance for
    different- vs same-sense pairs (0.5 = chance, 1 = every different-sense pair is farther)."""
    target = target or target_of(table)
    keys = [k for k in ["suite", "stimuli", "condition", *CHECKPOINT_KEYS] if k in table.columns]
    out = table.groupby(keys + ["layer"], sort=True).apply(_score, target=target, include_groups=False)
    out = out.reset_index()
    out["target"] = target
    return out


def best_layer(perf: pd.DataFrame, exclude_embedding: bool = False, metric: str = "r2") -> pd.DataFrame:
    """Each checkpoint's best layer by ``metric`` (the original study's score is best-layer R^2)."""
    p = perf[perf["layer"] > 0] if exclude_embedding else perf
    p = p.dropna(subset=[metric])
    if p.empty:
        raise ValueError(f"no layer has a defined {metric}: distances or the target do not vary (are all pairs "
                         "same-sense, or fewer than 3?)")
    keys = [k for k in ["suite", "stimuli", "condition", *CHECKPOINT_KEYS] if k in p.columns]
    idx = p.groupby(keys)[metric].idxmax()
    return p.loc[idx].rename(columns={"layer": "best_layer"}).reset_index(drop=True)
