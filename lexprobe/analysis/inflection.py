"""When does disambiguation take off? Breakpoints of best-layer performance against log10(step + 1).

Three estimates per (model, seed), as in the original study plus cross-checks:

* **segmented regression** (a continuous broken line, Muggeo's method as in R's ``segmented``, through the
  ``piecewise-regression`` package) with its confidence interval for the breakpoint, mapped back to steps;
* the **maximal discrete increase** between consecutive checkpoints;
* a **changepoint** in mean (``ruptures``, exact dynamic programming for one change);

and a **bootstrap over stimulus items** (words resampled with replacement, best-layer R^2 recomputed at every
checkpoint, breakpoint refitted) for an interval that reflects the choice of stimuli.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from lexprobe.analysis.performance import CHECKPOINT_KEYS, DEGENERATE

MIN_SEGMENTED = 5  # a broken line has 4 parameters


def _hinge_sse(x: np.ndarray, y: np.ndarray, psi: float) -> float:
    X = np.column_stack([np.ones_like(x), x, np.clip(x - psi, 0, None)])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    return float(((y - X @ beta) ** 2).sum())


def grid_breakpoint(x: np.ndarray, y: np.ndarray, n_grid: int = 200) -> float:
    """Least-squares breakpoint of a continuous broken line, by grid search strictly inside the data range."""
    xs = np.sort(np.unique(x))
    grid = np.linspace(xs[1], xs[-2], n_grid)
    return float(grid[int(np.argmin([_hinge_sse(x, y, g) for g in grid]))])


def segmented(x: np.ndarray, y: np.ndarray) -> dict:
    """Muggeo fit with one breakpoint, started at the grid optimum; falls back to the grid estimate (no CI)."""
    import piecewise_regression

    start = grid_breakpoint(x, y)
    out = {"psi": start, "psi_low": np.nan, "psi_high": np.nan, "converged": False, "davies_p": np.nan}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = piecewise_regression.Fit(list(x), list(y), start_values=[start], n_breakpoints=1,
                                           n_boot=0, tolerance=1e-7, max_iterations=100)
            res = fit.get_results()
        except Exception:  # noqa: BLE001 - a failed fit is reported as not converged
            return out
    if res.get("converged"):
        bp = res["estimates"]["breakpoint1"]
        out.update(psi=bp["estimate"], psi_low=bp["confidence_interval"][0], psi_high=bp["confidence_interval"][1],
                   converged=True, davies_p=res.get("davies", np.nan))
    return out


def to_step(x: float) -> float:
    """Inverse of log10(step + 1)."""
    return float(10**x - 1) if np.isfinite(x) else np.nan


def changepoint(y: np.ndarray) -> int:
    """Index of the first point after the single best change in mean (exact, ``ruptures.Dynp``)."""
    import ruptures

    return int(ruptures.Dynp(model="l2", min_size=2, jump=1).fit(y.reshape(-1, 1)).predict(n_bkps=1)[0])


def detect(steps: np.ndarray, score: np.ndarray) -> dict:
    """All point estimates and the segmented-regression CI for one performance curve (steps need not be sorted)."""
    order = np.argsort(steps)
    steps, score = np.asarray(steps, float)[order], np.asarray(score, float)[order]
    if len(steps) < 2:
        raise ValueError(f"inflection detection needs >= 2 checkpoints, got {len(steps)}")
    x = np.log10(steps + 1)
    nan_seg = {"psi": np.nan, "psi_low": np.nan, "psi_high": np.nan, "converged": False, "davies_p": np.nan}
    seg = segmented(x, score) if len(steps) >= MIN_SEGMENTED else nan_seg
    jump = int(np.argmax(np.diff(score))) + 1
    cp = steps[changepoint(score)] if len(steps) >= 4 else np.nan
    lo, hi = (np.clip(seg[k], x.min(), x.max()) for k in ("psi_low", "psi_high"))  # CI is symmetric in log
    return {
        "breakpoint_step": to_step(seg["psi"]), "ci_low_step": to_step(lo), "ci_high_step": to_step(hi),
        "ci_clipped": bool(lo != seg["psi_low"] or hi != seg["psi_high"]) if seg["converged"] else False, "converged": seg["converged"], "davies_p": seg["davies_p"],
        "max_increase_step": steps[jump], "max_increase_from": steps[jump - 1],
        "max_increase": float(score[jump] - score[jump - 1]), "changepoint_step": cp,
        "n_checkpoints": len(steps),
    }


def _bootstrap_best_r2(table: pd.DataFrame, n_boot: int, rng: np.random.Generator, target: str,
                       exclude_embedding: bool) -> tuple:
    """Best-layer R^2 per checkpoint for ``n_boot`` resamples of words; returns (steps, (n_boot, n_steps))."""
    ycol = "mean_relatedness" if target == "relatedness" else "same"
    if exclude_embedding:
        table = table[table["layer"] > 0]
    wide = table.pivot_table(index=["word", "pair_key"], columns=["step", "layer"], values="distance")
    ys = table.drop_duplicates("pair_key").set_index(["word", "pair_key"])[ycol].astype(float)
    ys = ys.reindex(wide.index).to_numpy()
    D = wide.to_numpy()  # (pairs, steps*layers)
    words = wide.index.get_level_values("word").to_numpy()
    uniq, inv = np.unique(words, return_inverse=True)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=n_boot)  # (B, words)
    W = counts[:, inv].astype(float)  # (B, pairs): each pair weighted by its word's draw count
    n = W.sum(1, keepdims=True)
    md, my = (W @ D) / n, (W @ ys)[:, None] / n
    cov = (W @ (D * ys[:, None])) / n - md * my
    vd = (W @ D**2) / n - md**2
    vy = (W @ ys**2)[:, None] / n - my**2
    varies = (np.ptp(D, axis=0) > DEGENERATE)[None, :] & (vd > 0) & (vy > 0)
    r2 = np.where(varies, cov**2 / np.clip(vd * vy, 1e-300, None), np.nan)
    cols = wide.columns.to_frame(index=False)
    steps = np.sort(cols["step"].unique())
    best = np.stack([np.nanmax(r2[:, (cols["step"] == s).to_numpy()], axis=1) for s in steps], axis=1)
    return steps, best


def inflections(best: pd.DataFrame, pairs_table: pd.DataFrame | None = None, n_boot: int = 200,
                seed: int = 0, score: str = "r2", exclude_embedding: bool = False,
                target: str | None = None) -> pd.DataFrame:
    """One row per (model, seed): breakpoint with CI (steps), cross-checks, and item-bootstrap percentiles.

    ``best`` is :func:`lexprobe.analysis.performance.best_layer` output; ``pairs_table`` the pair-level distances
    joined to stimuli (columns step, layer, word, pair_key, distance, same, mean_relatedness) for the bootstrap.
    """
    from lexprobe.analysis.performance import target_of

    rng = np.random.default_rng(seed)
    rows = []
    keys = [k for k in CHECKPOINT_KEYS if k != "step"]
    for key, g in best.groupby(keys):
        row = dict(zip(keys, key)) | detect(g["step"].to_numpy(), g[score].to_numpy())
        row |= {"boot_low_step": np.nan, "boot_high_step": np.nan, "n_boot": 0}
        if pairs_table is not None and n_boot and len(g) >= MIN_SEGMENTED:
            sub = pairs_table
            for k, v in zip(keys, key):
                sub = sub[sub[k] == v]
            steps, boot = _bootstrap_best_r2(sub, n_boot, rng, target or target_of(sub), exclude_embedding)
            psis = np.array([to_step(grid_breakpoint(np.log10(steps + 1), b)) for b in boot])
            row |= {"boot_low_step": float(np.percentile(psis, 2.5)), "boot_high_step": float(np.percentile(psis, 97.5)),
                    "n_boot": n_boot}
        rows.append(row)
    return pd.DataFrame(rows)
