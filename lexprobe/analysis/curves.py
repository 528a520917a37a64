"""When does disambiguation take off? Onset, midpoint and saturation of a performance curve on log10(step + 1).

Real development curves are flat, then rise, then plateau on a log-step axis (a single broken line forced through
rise and plateau puts its breakpoint in the flat part). Each (model, seed) curve is fitted by least squares on
x = log10(step + 1) with these models, and the one with the smallest **AICc** (Akaike's criterion with the
small-sample correction; Gaussian errors, the variance counted as a parameter) is used:

* ``flat`` (a constant) and ``linear``: no breakpoint (null models);
* ``segmented1``, ``segmented2``, ``segmented3``: continuous broken lines with 1, 2 (flat -> rise -> plateau) or 3
  breakpoints (e.g. flat -> fast rise -> slow rise -> plateau, which dense grids such as Pythia's 154 steps show);
* ``logistic``: ``lower + height / (1 + exp(-(x - midpoint) / scale))`` (4 parameters).

A model is compared only on curves with more than two checkpoints per mean parameter (9 for segmented1 and the
logistic, 13 for segmented2, 17 for segmented3): with fewer, a model that nearly interpolates the noisy late part
of a curve wins AICc whenever the early flat part is far less noisy, as in real curves. With 5-8 checkpoints the
one-breakpoint line is fitted without comparison; with fewer, only the cross-checks are reported.

The **rise**: for the logistic, from 10% (the **onset**) through 50% (the **midpoint**, its inflection) to 90% of
its height (the **saturation**). For broken lines, the run of consecutive rising segments with the largest total
increase, without creep at its ends (end segments less than half as steep as the run on average that together add
at most 10% of its increase); its first breakpoint is the onset (for segmented2 on a flat -> rise -> plateau curve:
the first breakpoint), its last the saturation, its centre in log-step (where a flat -> rise -> plateau line is
half-way up) the midpoint. An onset at the first checkpoint (``onset_censored``) means the curve already rises
there; a saturation at the last (``saturation_censored``) that it still rises there (a broken line then has no
midpoint: NaN).

Intervals, at 95%:

* ``*_low_step`` / ``*_high_step``: profile likelihood. Every grid point of the chosen model's q nonlinear
  parameters (breakpoints, or the logistic's 10% and 90% points; the linear ones profiled out) whose residual sum
  of squares S satisfies S <= S_min (1 + q / (n - p) F(q, n - p; 0.95)) lies in the joint 95% confidence region
  (Beale 1960, Halperin 1963); its projection onto onset / midpoint / saturation gives simultaneous, conservative
  intervals. They need only the curve, and assume its noise is homoscedastic: with noise that grows with the
  score, and broken lines fitted to curved rises, they can be too narrow (see benchmarks/inflection_acceptance.py).
* ``*_boot_low_step`` / ``*_boot_high_step``: a **bootstrap over stimulus items** (words resampled with
  replacement, every layer's score recomputed at every checkpoint, the best layer re-chosen, the chosen model
  family refitted), 2.5-97.5 percentiles; the whole step range when more than 2.5% of draws do not rise at all.

Cross-checks: the largest increase between consecutive checkpoints **per decade of log-step** (raw differences
favour the long gaps between sparse late checkpoints; per decade, close dense checkpoints amplify noise) and a
changepoint in mean (``ruptures``, exact).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from lexprobe.analysis.performance import CHECKPOINT_KEYS, DEGENERATE, SCORE_OF, target_of
from lexprobe.analysis.primitives import weighted_auc, weighted_r, word_weights
from lexprobe.base.lazy import optimize, stats

LEVEL = 0.95
RISE_FRACTION = 0.1  # the rise runs from 10% to 90% of the increase
MODELS = ("flat", "linear", "segmented1", "segmented2", "segmented3", "logistic")
N_PARAMS = {"flat": 1, "linear": 2, "segmented1": 4, "segmented2": 6, "segmented3": 8, "logistic": 4}  # mean params
N_LINEAR = {"flat": 1, "linear": 2, "logistic": 2}  # columns of the design (segmented: 2 + breakpoints)
MIN_SEGMENTED = 5  # fewer checkpoints: no curve model, only the cross-checks
GRID = {"segmented1": 201, "segmented2": 101, "segmented3": 41, "logistic": 101}  # grid points per axis
LOGISTIC_REACH = 0.25  # the logistic's 10%/90% points may lie this fraction of the x range beyond the data
POINTS = ("onset", "midpoint", "saturation")


def to_step(x: float) -> float:
    """Inverse of log10(step + 1)."""
    return float(10**x - 1) if np.isfinite(x) else np.nan


@dataclass(frozen=True)
class CurveFit:
    """One model fitted to one curve; positions in x = log10(step + 1), NaN where the fit does not rise."""

    model: str
    x: np.ndarray
    theta: np.ndarray  # breakpoints, or the logistic's (x at 10%, x at 90%)
    beta: np.ndarray  # linear coefficients
    rss: float
    onset: float
    midpoint: float
    saturation: float
    low: dict[str, float]  # profile-likelihood interval per point (x)
    high: dict[str, float]

    @property
    def n_params(self) -> int:
        return N_PARAMS[self.model]

    @property
    def aicc(self) -> float:
        return aicc(self.rss, len(self.x), self.n_params)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The fitted curve at ``x`` (log10(step + 1))."""
        X = _design(self.model, np.asarray(x, float), self.theta[None, :])[0]
        return X @ self.beta


def aicc(rss: float, n: int, n_params: int) -> float:
    """AICc of a Gaussian least-squares fit with ``n_params`` mean parameters (+1 for the variance)."""
    k = n_params + 1
    if n - k - 1 <= 0:
        return np.nan
    return float(n * np.log(rss / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1))


def _design(model: str, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Design matrices (G, n, k) for G nonlinear parameter vectors ``theta`` (G, q), filled column by column (the
    refinement calls this once per Nelder-Mead step, with G = 1)."""
    k = N_LINEAR[model] if not model.startswith("segmented") else 2 + theta.shape[1]
    X = np.empty((len(theta), len(x), k))
    X[..., 0] = 1.0
    if model == "linear" or model.startswith("segmented"):
        X[..., 1] = x
    if model.startswith("segmented"):
        for j in range(theta.shape[1]):
            X[..., 2 + j] = np.clip(x - theta[:, [j]], 0, None)
    elif model == "logistic":  # parameterised by its 10% and 90% points
        lo, hi = theta[:, [0]], theta[:, [1]]
        scale = (hi - lo) / (2 * np.log(9))
        X[..., 1] = 1 / (1 + np.exp(-np.clip((x - (lo + hi) / 2) / scale, -50, 50)))
    return X


@lru_cache(maxsize=16)
def _grid(model: str, xkey: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nonlinear parameter grid for ``model`` on the sorted x, the Gram matrices X'X of its designs and their
    least-squares projections (beta = proj @ y); cached, as every bootstrap draw reuses them."""
    x = np.frombuffer(xkey)
    ux = np.unique(x)
    if model in ("flat", "linear"):
        theta = np.zeros((1, 0))
    elif model.startswith("segmented"):  # ordered breakpoints strictly inside the data (>= 2 points outside)
        axis = np.linspace(ux[1], ux[-2], GRID[model])
        theta = np.array(list(combinations(axis, int(model[-1]))))
    else:  # the logistic's 10% and 90% points, ordered, with some of the rise over the data
        reach = LOGISTIC_REACH * (ux[-1] - ux[0])
        theta = np.array(list(combinations(np.linspace(ux[0] - reach, ux[-1] + reach, GRID[model]), 2)))
        theta = theta[(theta[:, 0] < ux[-1]) & (theta[:, 1] > ux[0])]
    X = _design(model, x, theta)
    XtX = X.transpose(0, 2, 1) @ X
    ridge = 1e-12 * np.trace(XtX, axis1=1, axis2=2)[:, None, None] * np.eye(X.shape[2])
    proj = np.linalg.solve(XtX + ridge, X.transpose(0, 2, 1))  # (G, k, n)
    return theta, XtX, proj


def _points(model: str, x: np.ndarray, theta: np.ndarray, beta: np.ndarray) -> dict[str, np.ndarray]:
    """Onset, midpoint and saturation (x) for each (theta, beta) row; NaN where the fit does not rise."""
    lo_x, hi_x = x[0], x[-1]
    if model == "logistic":
        rises = beta[:, 1] > 0
        onset, sat = np.clip(theta[:, 0], lo_x, hi_x), np.clip(theta[:, 1], lo_x, hi_x)
        mid = np.clip(theta.mean(1), lo_x, hi_x)
    else:
        g, rows = len(theta), np.arange(len(theta))
        slopes = np.zeros((g, 1)) if model == "flat" else np.cumsum(beta[:, 1:], axis=1)
        edges = np.column_stack([np.full(g, lo_x), theta, np.full(g, hi_x)])
        gain = slopes * np.diff(edges, axis=1)
        n_seg = slopes.shape[1]
        best, first, last = np.zeros(g), np.zeros(g, int), np.zeros(g, int)
        for a, b in combinations(range(n_seg + 1), 2):  # runs a..b-1 of rising segments: keep the largest gain
            total = gain[:, a:b].sum(1)
            better = (slopes[:, a:b] > 0).all(1) & (total > best)
            best, first, last = np.where(better, total, best), np.where(better, a, first), np.where(better, b - 1, last)
        mean_slope = best / np.maximum(edges[rows, last + 1] - edges[rows, first], 1e-12)
        head, tail = np.zeros(g), np.zeros(g)
        for _ in range(n_seg - 1):  # creep: end segments under half the run's mean slope, adding <= 10% in all
            i, j = first, last
            cut = (i < j) & (slopes[rows, i] < mean_slope / 2) & (head + gain[rows, i] <= RISE_FRACTION * best)
            head, first = head + np.where(cut, gain[rows, i], 0), np.where(cut, i + 1, i)
            cut = (first < j) & (slopes[rows, j] < mean_slope / 2) & (tail + gain[rows, j] <= RISE_FRACTION * best)
            tail, last = tail + np.where(cut, gain[rows, j], 0), np.where(cut, j - 1, j)
        rises = best > 0
        onset, sat = edges[rows, first], edges[rows, last + 1]
        bounded = (first > 0) & (last < n_seg - 1)  # both ends are breakpoints, not the data's edges
        mid = np.where(bounded, (onset + sat) / 2, np.nan)
    nan = np.where(rises, 1.0, np.nan)
    return {"onset": onset * nan, "midpoint": mid * nan, "saturation": sat * nan}


def fit(model: str, x: np.ndarray, y: np.ndarray, level: float = LEVEL, interval: bool = True) -> CurveFit:
    """Least-squares fit of ``model`` to a curve sorted by x: grid search over the nonlinear parameters, refined by
    Nelder-Mead, and (``interval``) profile-likelihood intervals of onset, midpoint and saturation."""
    theta, XtX, proj = _grid(model, np.ascontiguousarray(x, float).tobytes())
    beta = proj @ y
    rss = y @ y - np.einsum("gk,gkl,gl->g", beta, XtX, beta)  # |y - X beta|^2 at the least-squares beta
    floor = len(y) * (1e-6 * max(np.ptp(y), 1e-12)) ** 2  # exact fits: keep log(rss) finite
    rss = np.maximum(rss, floor)
    near = np.flatnonzero(rss <= rss.min() * (1 + 1e-9))  # ties (a flat ridge): take its centre
    best = near[np.argmin(((theta[near] - theta[near].mean(0)) ** 2).sum(1))] if theta.shape[1] else 0
    t_best, b_best, r_best = theta[best], beta[best], rss[best]
    if theta.shape[1]:
        t_best, b_best, r_best = _refine(model, x, y, theta, t_best, b_best, r_best, floor)
    pts = {k: float(v[0]) for k, v in _points(model, x, t_best[None], b_best[None]).items()}
    low, high = {k: np.nan for k in POINTS}, {k: np.nan for k in POINTS}
    dof = len(y) - N_PARAMS[model]
    if interval and dof > 0 and theta.shape[1]:
        q = theta.shape[1]  # joint region of the nonlinear parameters (Beale / Halperin), projected
        inside = rss <= r_best * (1 + q * stats.f.ppf(level, q, dof) / dof)
        grid_pts = _points(model, x, theta[inside], beta[inside])
        for k in POINTS:
            if np.isnan(pts[k]):
                continue
            vals = np.append(grid_pts[k], pts[k])
            # a no-rise fit inside the confidence set: the data do not pin the point down
            low[k], high[k] = (x[0], x[-1]) if np.isnan(vals).any() else (vals.min(), vals.max())
    return CurveFit(model, np.asarray(x, float), t_best, b_best, float(r_best), pts["onset"], pts["midpoint"],
                    pts["saturation"], low, high)


def fit_points(model: str, x: np.ndarray, y: np.ndarray, level: float = LEVEL) -> tuple[float, ...]:
    """Onset, midpoint and saturation (x) of ``model`` fitted to one curve, without intervals (a bootstrap draw)."""
    f = fit(model, x, y, level, interval=False)
    return tuple(getattr(f, k) for k in POINTS)


def _refine(model: str, x: np.ndarray, y: np.ndarray, theta: np.ndarray, t0: np.ndarray, b0: np.ndarray,
            r0: float, floor: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Nelder-Mead from the grid optimum, inside the grid's bounds (breakpoints ordered)."""
    lo, hi = theta.min(0), theta.max(0)

    lo_t, hi_t, x0, x1 = lo.tolist(), hi.tolist(), float(x[0]), float(x[-1])

    def objective(t: np.ndarray) -> float:
        v = t.tolist()  # bounds and order checked on Python floats: the same comparisons, far less overhead
        if any(a < b or a > c for a, b, c in zip(v, lo_t, hi_t)) or any(b - a <= 0 for a, b in zip(v, v[1:])):
            return np.inf
        if model == "logistic" and not (v[0] < x1 and v[1] > x0):
            return np.inf
        X = _design(model, x, t[None])[0]
        b, *_ = np.linalg.lstsq(X, y, rcond=None)
        return float(((X @ b - y) ** 2).sum())

    step = (hi - lo) / (len(np.unique(theta[:, 0])) - 1 or 1)
    simplex = np.vstack([t0] + [t0 + np.eye(len(t0))[i] * step / 2 for i in range(len(t0))])
    res = optimize.minimize(objective, t0, method="Nelder-Mead",
                            options={"initial_simplex": simplex, "xatol": 1e-4, "fatol": 1e-14 + r0 * 1e-10})
    if not np.isfinite(res.fun) or res.fun >= r0:
        return t0, b0, r0
    X = _design(model, x, res.x[None])[0]
    b, *_ = np.linalg.lstsq(X, y, rcond=None)
    return res.x, b, max(float(res.fun), floor)


def candidates(n: int) -> tuple[str, ...]:
    """Models compared on ``n`` checkpoints: more than two checkpoints per mean parameter (a model that can
    nearly interpolate the noisy part of a curve wins AICc when the early, flat part is much less noisy, as in
    real curves), which also keeps AICc defined (n >= parameters + 3)."""
    return tuple(m for m in MODELS if n >= max(2 * N_PARAMS[m] + 1, N_PARAMS[m] + 3))


def select(x: np.ndarray, y: np.ndarray, level: float = LEVEL) -> tuple[CurveFit | None, dict[str, float], str]:
    """Fit every model AICc allows and keep the smallest AICc; (fit, AICc per model, how it was chosen)."""
    n = len(y)
    crit = {m: np.nan for m in MODELS}
    if n < MIN_SEGMENTED:
        return None, crit, f"none: {n} checkpoints (need >= {MIN_SEGMENTED})"
    if np.ptp(y) <= DEGENERATE:
        return fit("flat", x, y, level), crit, "constant curve"
    models = candidates(n)
    if "segmented1" not in models:
        return fit("segmented1", x, y, level), crit, f"segmented1 only: {n} checkpoints are too few to compare models"
    fits = {m: fit(m, x, y, level) for m in models}
    crit |= {m: f.aicc for m, f in fits.items()}
    chosen = min(models, key=lambda m: crit[m])
    return fits[chosen], crit, "AICc"


def changepoint(y: np.ndarray) -> int:
    """Index of the first point after the single best change in mean (exact, ``ruptures.Dynp``)."""
    import ruptures

    return int(ruptures.Dynp(model="l2", min_size=2, jump=1).fit(y.reshape(-1, 1)).predict(n_bkps=1)[0])


def max_increase(steps: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """The consecutive pair of checkpoints with the largest increase per decade of log10(step + 1)."""
    rate = np.diff(score) / np.diff(np.log10(steps + 1))
    j = int(np.nanargmax(rate)) + 1
    return {"max_increase_from": steps[j - 1], "max_increase_step": steps[j],
            "max_increase_per_decade": float(rate[j - 1])}


def _step_columns(f: CurveFit | None) -> dict[str, float]:
    out = {}
    for k in POINTS:
        val = np.nan if f is None else getattr(f, k)
        out[f"{k}_step"] = to_step(val)
        out[f"{k}_low_step"] = to_step(np.nan if f is None else f.low[k])
        out[f"{k}_high_step"] = to_step(np.nan if f is None else f.high[k])
    return out


def detect(steps: np.ndarray, score: np.ndarray, level: float = LEVEL) -> dict[str, Any]:
    """Chosen curve model, onset / midpoint / saturation with profile intervals, and the cross-checks for one
    performance curve (steps need not be sorted; missing scores are dropped)."""
    steps, score = np.asarray(steps, float), np.asarray(score, float)
    keep = np.isfinite(score)
    order = np.argsort(steps[keep])
    steps, score = steps[keep][order], score[keep][order]
    if len(steps) < 2:
        raise ValueError(f"inflection detection needs >= 2 checkpoints with a score, got {len(steps)}")
    x = np.log10(steps + 1)
    f, crit, how = select(x, score, level)
    rises = f is not None and np.isfinite(f.onset)
    shape = "flat" if f is None or f.model == "flat" else "no rise"
    if rises and f is not None:  # (rises implies a fit; mypy does not follow the alias)
        shape = {(True, True): "rise", (False, True): "flat->rise", (True, False): "rise->plateau",
                 (False, False): "flat->rise->plateau"}[(f.onset <= x[0], f.saturation >= x[-1])]
    out = {"curve_model": None if f is None else f.model, "selected_by": how, "shape": shape,
           **_step_columns(f),
           "onset_censored": bool(rises and f is not None and f.onset <= x[0]),
           "saturation_censored": bool(rises and f is not None and f.saturation >= x[-1]),
           **{f"aicc_{m}": crit[m] for m in MODELS},
           **max_increase(steps, score),
           "changepoint_step": steps[changepoint(score)] if len(steps) >= 4 else np.nan,
           "n_checkpoints": len(steps)}
    return out


def fitted_curves(best: pd.DataFrame, score: str = "r2", n_points: int = 120) -> pd.DataFrame:
    """The chosen model's fitted curve per (model, seed) on ``n_points`` steps spaced evenly in log10(step + 1)."""
    keys = [k for k in CHECKPOINT_KEYS if k != "step"]
    rows = []
    for key, g in best.groupby(keys):
        g = g.dropna(subset=[score]).sort_values("step")
        x = np.log10(g["step"].to_numpy(float) + 1)
        f, _, _ = select(x, g[score].to_numpy(float))
        if f is None:
            continue
        xs = np.linspace(x[0], x[-1], n_points)
        rows.append(pd.DataFrame({**dict(zip(keys, key)), "step": 10**xs - 1, "fitted": f.predict(xs),
                                  "curve_model": f.model}))
    empty = pd.DataFrame(columns=[*keys, "step", "fitted", "curve_model"])
    return pd.concat(rows, ignore_index=True) if rows else empty


def _bootstrap_scores(table: pd.DataFrame, n_boot: int, rng: np.random.Generator, target: str,
                      exclude_embedding: bool, by: str, observed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Best-layer score per checkpoint for ``n_boot`` resamples of words: (steps, (n_boot, n_steps)); with
    ``observed`` a first row for the observed sample (every word once).

    Each pair is weighted by its word's draw count; per draw, every layer's score is recomputed and the best layer
    re-chosen by ``by`` as :func:`~lexprobe.analysis.performance.best_layer` does: "r2" (largest r^2 of distance vs
    target, Pearson r from weighted moments), "signed" (most negative r) or "auc" (largest AUC of distance for
    different- vs same-sense pairs, whatever the target)."""
    if by not in SCORE_OF:
        raise ValueError(f"by must be one of {tuple(SCORE_OF)}, not {by!r}")
    if exclude_embedding:
        table = table[table["layer"] > 0]
    wide = table.pivot_table(index=["word", "pair_key"], columns=["step", "layer"], values="distance")
    pairs = table.drop_duplicates("pair_key").set_index(["word", "pair_key"])
    W = word_weights(wide.index.get_level_values("word").to_numpy(), n_boot, rng, observed)  # (B, pairs)
    if by == "auc":
        different = ~pairs["same"].astype(bool).reindex(wide.index).to_numpy(bool)
        value = weighted_auc(W, wide.to_numpy(), different)  # (B, steps*layers)
    else:
        ycol = "mean_relatedness" if target == "relatedness" else "same"
        ys = pairs[ycol].astype(float).reindex(wide.index).to_numpy()
        r = weighted_r(W, wide.to_numpy(), ys)  # (B, steps*layers)
        value = r**2 if by == "r2" else -np.sign(r) * r**2  # the best layer maximises this; it is also the score
    cols = wide.columns.to_frame(index=False)
    steps = np.sort(cols["step"].unique())
    best = np.stack([np.nanmax(value[:, (cols["step"] == s).to_numpy()], axis=1) for s in steps], axis=1)
    return steps, best


def _interval(values: np.ndarray, lo_x: float, hi_x: float, level: float) -> tuple[float, float]:
    """Percentile interval; the whole range when more than the tail share of draws did not rise at all."""
    tail = (1 - level) / 2
    if np.isnan(values).mean() > tail:
        return lo_x, hi_x
    return float(np.nanpercentile(values, 100 * tail)), float(np.nanpercentile(values, 100 * (1 - tail)))


def inflections(best: pd.DataFrame, pairs_table: pd.DataFrame | None = None, n_boot: int = 200,
                seed: int = 0, by: str = "r2", score: str | None = None, exclude_embedding: bool = False,
                target: str | None = None, level: float = LEVEL,
                map_fn: Callable[[Callable[[np.ndarray], tuple[float, ...]], list[np.ndarray]],
                                 Iterable[tuple[float, ...]]] = map) -> pd.DataFrame:
    """One row per (model, seed): chosen curve model and shape, onset / midpoint / saturation with profile and
    item-bootstrap intervals (steps), AICc of every model, and the cross-checks.

    ``best`` is :func:`lexprobe.analysis.performance.best_layer` output chosen ``by`` the same rule; ``score`` (default
    the rule's own score, ``SCORE_OF[by]``) is the column followed across training. ``pairs_table`` holds the
    pair-level distances joined to stimuli (columns step, layer, word, pair_key, distance, same, mean_relatedness)
    for the item bootstrap (``n_boot`` resamples of words; 0 skips it). ``map_fn`` maps the bootstrap refits over
    the draws (default ``map``; :func:`lexprobe.sweep.pool.parallel_map` spreads them over worker processes, each fit
    deterministic, so the table is the same).
    """
    score = score or SCORE_OF[by]
    if pairs_table is not None and n_boot and score != SCORE_OF[by]:
        raise ValueError(f"the item bootstrap re-chooses the best layer by {by!r} and follows {SCORE_OF[by]!r}, "
                         f"not {score!r}: pass score=None or n_boot=0")
    rng = np.random.default_rng(seed)
    rows = []
    keys = [k for k in CHECKPOINT_KEYS if k != "step"]
    for key, g in best.groupby(keys):
        row = dict(zip(keys, key)) | detect(g["step"].to_numpy(), g[score].to_numpy(), level)
        boot = {f"{k}_boot_{e}_step": np.nan for k in POINTS for e in ("low", "high")}
        row |= boot | {"n_boot": 0}
        if pairs_table is not None and n_boot and np.isfinite(row["onset_step"]):
            sub = pairs_table
            for k, v in zip(keys, key):
                sub = sub[sub[k] == v]
            steps, scores = _bootstrap_scores(sub, n_boot, rng, target or target_of(sub), exclude_embedding, by)
            ok = np.isfinite(scores).all(0)  # checkpoints where some resample has no defined score are left out
            x, scores = np.log10(steps[ok] + 1), scores[:, ok]
            draws = np.array(list(map_fn(partial(fit_points, row["curve_model"], x, level=level), list(scores))))
            for i, k in enumerate(POINTS):
                if np.isnan(row[f"{k}_step"]):
                    continue
                lo, hi = _interval(draws[:, i], x[0], x[-1], level)
                row |= {f"{k}_boot_low_step": to_step(lo), f"{k}_boot_high_step": to_step(hi)}
            row["n_boot"] = n_boot
        rows.append(row)
    return pd.DataFrame(rows)
