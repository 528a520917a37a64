"""Disambiguation performance per checkpoint and layer: R^2 of cosine distance vs relatedness (or sense), AUC.

Works on lexprobe's stored ``distances`` (joined to the pair table) and on the long tables published by the
original study (read by :func:`lexprobe.stimuli.published.from_published`, in the same columns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lexprobe.base.lazy import stats
from lexprobe.stimuli.tables import Stimuli

CHECKPOINT_KEYS = ["model", "seed", "step"]
DEGENERATE = 1e-9  # distance ranges below this are numerical noise, not a measurement
SCORE_OF = {"r2": "r2", "signed": "r2_signed", "auc": "auc"}  # best-layer rule -> the score it maximises


def with_pairs(distances: pd.DataFrame, stimuli: Stimuli) -> pd.DataFrame:
    """Attach each pair's word, same-sense flag and human relatedness to stored distances."""
    cols = ["pair_id", "word", "same", "mean_relatedness"]
    out = distances.merge(stimuli.pairs[cols], on="pair_id", how="left", validate="many_to_one")
    out["pair_key"] = out["pair_id"]
    return out


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half): Mann-Whitney AUC."""
    pos = positive.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
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


@dataclass(frozen=True)
class Scoring:
    """The one rule every stage scores a checkpoint by: the best layer chosen ``by`` a score (see
    :func:`best_layer`), the embedding layer left out when ``exclude_embedding``, distances held against ``target``
    (``relatedness`` or ``same``, :func:`target_of`)."""

    by: str = "r2"
    exclude_embedding: bool = False
    target: str = "relatedness"

    def __post_init__(self) -> None:
        if self.by not in SCORE_OF:
            raise ValueError(f"by={self.by!r}: choose one of {tuple(SCORE_OF)}")
        if self.target not in TARGETS:
            raise ValueError(f"target={self.target!r}: choose one of {TARGETS}")

    @property
    def score(self) -> str:
        """The best-layer score followed across training (r2, r2_signed or auc)."""
        return SCORE_OF[self.by]

    def layers(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows of a per-layer table this rule may pick from (layer 0 dropped when the embedding is left out)."""
        return table[table["layer"] > 0] if self.exclude_embedding else table

    def pick(self, perf: pd.DataFrame) -> pd.DataFrame:
        """Each checkpoint's best layer of a :func:`performance` table by this rule."""
        return best_layer(perf, exclude_embedding=self.exclude_embedding, by=self.by)

    def best(self, pairs: pd.DataFrame) -> pd.DataFrame:
        """Best-layer scores of a pair table (distances joined to pairs) by this rule."""
        return self.pick(performance(pairs, target=self.target))
