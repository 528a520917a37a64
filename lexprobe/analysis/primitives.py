"""Statistics primitives shared by the analysis modules, each written once.

* :func:`word_weights`: the item bootstrap: words (nouns) resampled with replacement, each pair weighted by the
  number of times its word was drawn;
* :func:`weighted_r` and :func:`weighted_auc`: per-layer scores of pair-level distances under such weights
  (Pearson r / r^2 from weighted moments; the Mann-Whitney AUC of :func:`lexprobe.analysis.performance.auc`);
* :func:`empirical_p`: the permutation / bootstrap p ``(1 + #{null >= obs}) / (1 + #null)``;
* :func:`bh` and :func:`bh_within`: Benjamini-Hochberg q-values, over a whole array or within groups of a table;
* :func:`at_last_checkpoint`: the rows at each (model, seed)'s last step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lexprobe.analysis.performance import DEGENERATE
from lexprobe.base.lazy import multitest

TIE = 1e-12  # a null draw this close below the observed value counts as reaching it (rounding noise)


def word_weights(words: np.ndarray, n_boot: int, rng: np.random.Generator, observed: bool = False) -> np.ndarray:
    """Pair weights of ``n_boot`` item-bootstrap draws, (n_boot, pairs): as many words as there are drawn with
    replacement (one multinomial draw per bootstrap sample), each pair weighted by its word's draw count.
    ``words``: each pair's word. ``observed``: a first row of ones (the observed sample) on top."""
    uniq, inv = np.unique(words, return_inverse=True)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=n_boot)
    W = np.vstack([np.ones(len(words)), counts[:, inv]]) if observed else counts[:, inv]
    return W.astype(float)


def weighted_r(W: np.ndarray, D: np.ndarray, y: np.ndarray, squared: bool = False) -> np.ndarray:
    """Pearson r (``squared``: r^2) of each column of ``D`` (pairs, columns: e.g. layers) with ``y`` (pairs,) under
    pair weights ``W`` (B, pairs), from weighted moments: (B, columns). NaN where the column's distances are
    rounding noise (range <= DEGENERATE over all pairs) or a weighted variance is not positive."""
    n = W.sum(1, keepdims=True)
    md, my = (W @ D) / n, (W @ y)[:, None] / n
    cov = (W @ (D * y[:, None])) / n - md * my
    vd = (W @ D**2) / n - md**2
    vy = (W @ y**2)[:, None] / n - my**2
    varies = (np.ptp(D, axis=0) > DEGENERATE)[None, :] & (vd > 0) & (vy > 0)
    var = np.clip(vd * vy, 1e-300, None)
    return np.where(varies, cov**2 / var if squared else cov / np.sqrt(var), np.nan)


def weighted_auc(W: np.ndarray, D: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """:func:`lexprobe.analysis.performance.auc` of each column of ``D`` (pairs, columns) under pair weights ``W``
    (B, pairs): the weighted share of (positive, negative) pairs in which the positive scores higher, ties counting
    half, i.e. the AUC of the sample in which each pair appears as often as its weight. (B, columns); NaN for a
    column with a missing score or a draw without both classes. With integer weights every sum is exact, so unit
    weights give :func:`~lexprobe.analysis.performance.auc` (and ``performance``'s ``auc``) to the last bit."""
    positive = np.asarray(positive, bool)
    w1, w0 = W[:, positive].sum(1), W[:, ~positive].sum(1)
    out = np.full((len(W), D.shape[1]), np.nan)
    for c in range(D.shape[1]):
        d = D[:, c]
        if np.isnan(d).any():
            continue
        order = np.argsort(d, kind="stable")
        ds, pos, ws = d[order], positive[order], W[:, order]
        starts = np.flatnonzero(np.r_[True, ds[1:] != ds[:-1]])  # groups of tied scores
        wpos = np.add.reduceat(np.where(pos, ws, 0.0), starts, axis=1)
        wneg = np.add.reduceat(np.where(pos, 0.0, ws), starts, axis=1)
        below = np.cumsum(wneg, axis=1) - wneg  # negative weight strictly below each group
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, c] = (wpos * (below + wneg / 2)).sum(1) / (w1 * w0)
    return np.where(((w1 > 0) & (w0 > 0))[:, None], out, np.nan)


def empirical_p(null: np.ndarray, obs: float, tol: float = TIE) -> float:
    """One-sided empirical p of ``obs`` against draws ``null`` (permutations or bootstrap draws): ``(1 + #{null >=
    obs - tol}) / (1 + #null)``, the observed value counted as one of the draws; NaN for an undefined ``obs``."""
    if not np.isfinite(obs):
        return np.nan
    null = np.asarray(null)
    return float((1 + (null >= obs - tol).sum()) / (1 + len(null)))


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (NaNs stay NaN)."""
    p = np.asarray(p, float)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = multitest.multipletests(p[ok], method="fdr_bh")[1]
    return q


def holm_rejects(p: np.ndarray | pd.Series, alpha: float) -> int:
    """How many of the p values Holm's step-down procedure rejects at family-wise error ``alpha``: the k smallest,
    for the largest k whose i-th smallest (i = 0..k-1) is at most ``alpha / (m - i)`` (what statsmodels'
    ``multipletests(method="holm")`` rejects, without the full garbage collection it runs on every call)."""
    ps = np.sort(np.asarray(p, float))
    ok = ps <= alpha / (len(ps) - np.arange(len(ps)))
    return len(ps) if ok.all() else int(np.argmin(ok))


def bh_within(df: pd.DataFrame, col: str, keys: list[str] | str) -> pd.Series:
    """:func:`bh` q-values of column ``col`` within each group of ``keys`` (aligned with ``df``; NaN for rows
    with a missing key)."""
    return df.groupby(keys)[col].transform(lambda s: pd.Series(bh(s.to_numpy()), index=s.index))


def at_last_checkpoint(df: pd.DataFrame) -> pd.DataFrame:
    """The rows at the last step of their (model, seed) (of their seed in a table without a model column)."""
    run = ["model", "seed"] if "model" in df.columns else ["seed"]
    return df[df["step"] == df.groupby(run)["step"].transform("max")]


def stays_from(steps: np.ndarray, flags: np.ndarray) -> float:
    """The first of ``steps`` (sorted) from which ``flags`` holds at every later step; NaN if it fails at the last."""
    off = np.flatnonzero(~np.asarray(flags, bool))
    start = off[-1] + 1 if len(off) else 0
    return steps[start] if start < len(steps) else np.nan
