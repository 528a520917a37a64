"""Seed replication: are the findings properties of the architecture and data, or accidents of one training run?

All functions take tidy tables from the earlier stages (one row per seed, checkpoint or head) and compare seeds:

* :func:`inflection_agreement`: per-seed onsets side by side, their spread in log10(step + 1), and Cochran's Q
  test of whether the seeds differ more than their own intervals allow. Each seed's interval (item bootstrap by
  default) is turned into a standard error on the log-step axis, ``se = (hi - lo) / (2 z_{.975})``; with inverse-
  variance weights ``w = 1 / se^2``, ``Q = sum w (x - x_w)^2`` is chi-square with k - 1 degrees of freedom when all
  seeds share one onset (I^2 = (Q - df) / Q: the share of the spread beyond the intervals).
* :func:`mixed_model`: best-layer score on x = log10(step + 1), piecewise around the inflection c
  (``score ~ pre + post`` with pre = x - c and post = max(x - c, 0): the intercept is the score at the inflection,
  ``pre`` the slope before it, ``post`` the change of slope after it), with a random intercept and a random ``post``
  slope per seed (statsmodels MixedLM, REML); a tidy table of fixed effects with Wald 95% intervals (plus the derived
  slope after the inflection) and the seed variance components.
* :func:`head_agreement`: overlap of the heads that pass discovery between seeds. The statistic is the mean
  pairwise Jaccard index of the seeds' head sets; two permutation nulls redraw each seed's set: **within layer**
  (each seed keeps its number of heads per layer, head identities shuffled inside the layer: is it the same heads,
  beyond the same layers?) and **anywhere** (the same number of heads placed anywhere). Layer-level agreement (the
  mean pairwise weighted Jaccard of the seeds' heads-per-layer counts) is tested against the anywhere null (the
  within-layer null leaves it unchanged). :func:`seed_counts` gives, per (layer, head), the seeds in which it passes.
* :func:`causal_agreement`: the stage-4 effect of ablating each seed's discovered heads at its last checkpoint, with
  its random-head-set p, and per family the seeds' p-values combined (Fisher's method; seeds are independent runs).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lexprobe.analysis.primitives import at_last_checkpoint, empirical_p
from lexprobe.analysis.selection import ALPHA
from lexprobe.base.lazy import stats

if TYPE_CHECKING:
    from statsmodels.regression.mixed_linear_model import MixedLMResultsWrapper  # no stubs: Any to mypy

Z95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975) (tested), written out: importing this module needs no scipy
INTERVALS = {"boot": ("onset_boot_low_step", "onset_boot_high_step"), "profile": ("onset_low_step", "onset_high_step")}


def log_step(step: pd.Series | np.ndarray | float) -> np.ndarray:
    """x = log10(step + 1), the axis every comparison of steps uses."""
    return np.log10(np.asarray(step, float) + 1)


def inflection_agreement(inflection: pd.DataFrame, interval: str = "boot") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-seed onsets (``inflection`` is :func:`lexprobe.analysis.curves.inflections` output) and, per model,
    their spread in log10(step + 1) with Cochran's Q heterogeneity test on ``interval`` (``boot``: item bootstrap,
    ``profile``: profile likelihood). Seeds without an onset or a positive-width interval are left out of the test
    (``n_tested``)."""
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {sorted(INTERVALS)}, not {interval!r}")
    lo_col, hi_col = INTERVALS[interval]
    cols = ["model", "seed", "curve_model", "shape", "onset_step", "onset_low_step", "onset_high_step",
            "onset_boot_low_step", "onset_boot_high_step", "midpoint_step", "saturation_step", "onset_censored"]
    per = inflection[[c for c in cols if c in inflection.columns]].copy()
    per["log10_onset"] = log_step(per["onset_step"])
    per["se_log10"] = (log_step(per[hi_col]) - log_step(per[lo_col])) / (2 * Z95)
    rows = []
    for model, g in per.groupby("model"):
        x = g["log10_onset"].to_numpy()
        found = np.isfinite(x)
        ok = found & np.isfinite(g["se_log10"].to_numpy()) & (g["se_log10"].to_numpy() > 0)
        row = {"model": model, "n_seeds": len(g), "n_with_onset": int(found.sum()), "interval": interval,
               "min_onset_step": float(np.nanmin(g["onset_step"])) if found.any() else np.nan,
               "max_onset_step": float(np.nanmax(g["onset_step"])) if found.any() else np.nan,
               "range_log10": float(np.ptp(x[found])) if found.any() else np.nan,
               "sd_log10": float(np.std(x[found], ddof=1)) if found.sum() > 1 else np.nan,
               "n_tested": int(ok.sum())}
        row |= heterogeneity(x[ok], g["se_log10"].to_numpy()[ok])
        rows.append(row)
    return per.reset_index(drop=True), pd.DataFrame(rows)


def heterogeneity(x: np.ndarray, se: np.ndarray) -> dict[str, float]:
    """Cochran's Q of estimates ``x`` with standard errors ``se``: Q, df, p (chi-square), I^2, the weighted mean."""
    if len(x) < 2:
        return {"weighted_mean_log10": np.nan, "Q": np.nan, "df": len(x) - 1, "p": np.nan, "I2": np.nan}
    w = 1 / np.asarray(se, float) ** 2
    mean = float((w * x).sum() / w.sum())
    q = float((w * (x - mean) ** 2).sum())
    df = len(x) - 1
    return {"weighted_mean_log10": mean, "Q": q, "df": df, "p": float(stats.chi2.sf(q, df)),
            "I2": max(0.0, (q - df) / q) if q > 0 else 0.0}


def breakpoint_of(inflection: pd.DataFrame, best: pd.DataFrame) -> tuple[float, str]:
    """The inflection c (in log10(step + 1)) the mixed model bends at: the median of the seeds' onsets that lie
    strictly inside the measured steps, else (no such onset) the middle of the log-step range; and which it was."""
    x = log_step(best["step"])
    lo, hi = float(np.min(x)), float(np.max(x))
    on = log_step(inflection["onset_step"].dropna())
    inside = on[(on > lo) & (on < hi)]
    if len(inside):
        return float(np.median(inside)), f"median onset of {len(inside)} seed(s)"
    return (lo + hi) / 2, "middle of the log-step range (no seed has an onset inside the measured steps)"


@dataclass
class MixedFit:
    """Tidy result of :func:`mixed_model`: fixed effects, seed variance components, and one row of fit facts."""

    fixed: pd.DataFrame
    variance: pd.DataFrame
    info: pd.DataFrame


def piecewise_frame(best: pd.DataFrame, breakpoint: float, score: str = "r2") -> pd.DataFrame:
    """The mixed model's data: per checkpoint y (the score), x = log10(step + 1), pre = x - c, post = max(x - c, 0)."""
    d = best[["model", "seed", "step", score]].dropna().rename(columns={score: "y"})
    x = log_step(d["step"])
    return d.assign(x=x, pre=x - breakpoint, post=np.maximum(x - breakpoint, 0.0)).reset_index(drop=True)


def _fit_one(d: pd.DataFrame) -> tuple[MixedLMResultsWrapper, str, list[str]]:
    """REML fit with a random intercept and ``post`` slope per seed; when that fails or does not converge, a random
    intercept only (if that converges). Returns the result, the random part used and the warnings raised."""
    import statsmodels.formula.api as smf

    fits: list[tuple[MixedLMResultsWrapper | None, str, list[str]]] = []
    for re_formula, label in (("~post", "intercept + post slope"), ("~1", "intercept")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = smf.mixedlm("y ~ pre + post", d, groups=d["seed"], re_formula=re_formula).fit(reml=True)
            except (np.linalg.LinAlgError, ValueError) as err:
                fits.append((None, label, [f"{label}: {err}"]))
                continue
        notes = sorted({f"{label}: {str(w.message).splitlines()[0]}" for w in caught})
        if np.all(np.isfinite(res.bse_fe)):
            fits.append((res, label, notes))
            if res.converged:
                break
    usable = [(fit, lab, msgs) for fit, lab, msgs in fits if fit is not None]
    if not usable:
        raise ValueError(f"mixed model could not be fitted: {[n for f in fits for n in f[2]]}")
    res, label, notes = next((f for f in usable if f[0].converged), usable[0])
    if label == "intercept" and fits[0][1] != label:
        label = "intercept (the random post slope could not be fitted or did not converge)"
    return res, label, notes


def mixed_model(best: pd.DataFrame, inflection: pd.DataFrame, score: str = "r2",
                breakpoint: float | None = None) -> MixedFit:
    """Piecewise mixed model per model (see the module docstring); ``breakpoint`` in log10(step + 1) overrides
    :func:`breakpoint_of`. Needs at least two seeds."""
    fixed, variance, info = [], [], []
    for model, b in best.groupby("model"):
        if b["seed"].nunique() < 2:
            raise ValueError(f"{model}: the mixed model needs at least 2 seeds, got {b['seed'].nunique()}")
        inf = inflection[inflection["model"] == model]
        c, source = (breakpoint, "given") if breakpoint is not None else breakpoint_of(inf, b)
        d = piecewise_frame(b, c, score)
        res, random_part, notes = _fit_one(d)
        fe = list(res.fe_params.index)
        cov = res.cov_params().loc[fe, fe]
        est, se = res.fe_params.copy(), res.bse_fe.copy()
        est["slope after (pre + post)"] = est["pre"] + est["post"]
        se["slope after (pre + post)"] = float(np.sqrt(cov.loc["pre", "pre"] + cov.loc["post", "post"]
                                                       + 2 * cov.loc["pre", "post"]))
        names = {"Intercept": "score at the inflection", "pre": "slope before (per decade)",
                 "post": "change of slope after"}
        for term in est.index:
            z = est[term] / se[term] if se[term] > 0 else np.nan
            fixed.append({"model": model, "term": names.get(term, term), "estimate": float(est[term]),
                          "se": float(se[term]), "z": float(z), "p": float(2 * stats.norm.sf(abs(z))),
                          "ci_low": float(est[term] - Z95 * se[term]), "ci_high": float(est[term] + Z95 * se[term])})
        cre = res.cov_re
        variance.append({"model": model, "component": "seed: intercept variance", "value": float(cre.iloc[0, 0])})
        if cre.shape[0] > 1:
            variance += [{"model": model, "component": "seed: post-slope variance", "value": float(cre.iloc[1, 1])},
                         {"model": model, "component": "seed: intercept-slope covariance",
                          "value": float(cre.iloc[0, 1])}]
        variance.append({"model": model, "component": "residual variance", "value": float(res.scale)})
        info.append({"model": model, "breakpoint_log10": c, "breakpoint_step": float(10**c - 1),
                     "breakpoint_from": source, "random_effects": random_part, "n_obs": len(d),
                     "n_seeds": d["seed"].nunique(), "converged": bool(res.converged), "method": "REML",
                     "warnings": "; ".join(notes)})
    return MixedFit(pd.DataFrame(fixed), pd.DataFrame(variance), pd.DataFrame(info))


def _grid(stats_: pd.DataFrame) -> tuple[int, int]:
    return int(stats_["layer"].max()) + 1, int(stats_["head"].max()) + 1


def head_masks(stats_: pd.DataFrame, column: str = "passes") -> tuple[list[int], np.ndarray]:
    """One model's seeds and their head sets as a boolean array (seeds, layers, heads) from head-discovery stats."""
    n_layers, n_heads = _grid(stats_)
    seeds = sorted(int(s) for s in stats_["seed"].unique())
    mask = np.zeros((len(seeds), n_layers, n_heads), bool)
    for r in stats_[stats_[column].astype(bool)].itertuples():
        mask[seeds.index(int(r.seed)), int(r.layer), int(r.head)] = True
    return seeds, mask


def mean_jaccard(sets: np.ndarray) -> np.ndarray:
    """Mean pairwise Jaccard index of boolean sets (..., seeds, items) over seed pairs with a non-empty union
    (NaN when there is none)."""
    m = sets.astype(float)
    inter = m @ np.swapaxes(m, -1, -2)
    size = m.sum(-1)
    union = size[..., :, None] + size[..., None, :] - inter
    return _mean_pairs(inter, union)


def mean_weighted_jaccard(counts: np.ndarray) -> np.ndarray:
    """Mean pairwise weighted Jaccard (sum of minima / sum of maxima) of counts (..., seeds, items)."""
    a, b = counts[..., :, None, :], counts[..., None, :, :]
    return _mean_pairs(np.minimum(a, b).sum(-1), np.maximum(a, b).sum(-1))


def _mean_pairs(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    s = num.shape[-1]
    iu = np.triu_indices(s, 1)
    num, den = num[..., iu[0], iu[1]], den[..., iu[0], iu[1]]
    ok = den > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok.any(-1), np.where(ok, num / np.where(ok, den, 1), 0).sum(-1) / ok.sum(-1), np.nan)


def _finite_mean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else np.nan


def _perm_p(null: np.ndarray, obs: float) -> float:
    return empirical_p(null[np.isfinite(null)], obs)


def head_agreement(stats_: pd.DataFrame, column: str = "passes", n_perm: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per model: mean pairwise Jaccard of the seeds' head sets against the within-layer and anywhere permutation
    nulls, and the layer-level agreement against the anywhere null (see the module docstring)."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, st in stats_.groupby("model"):
        seeds, mask = head_masks(st, column)
        s, n_layers, n_heads = mask.shape
        obs = float(mean_jaccard(mask.reshape(s, -1)))
        obs_layer = float(mean_weighted_jaccard(mask.sum(-1)))
        many = np.broadcast_to(mask, (n_perm, *mask.shape))
        within = rng.permuted(many, axis=3).reshape(n_perm, s, -1)
        anywhere = rng.permuted(many.reshape(n_perm, s, -1), axis=2)
        null_within, null_any = mean_jaccard(within), mean_jaccard(anywhere)
        null_layer = mean_weighted_jaccard(anywhere.reshape(n_perm, s, n_layers, n_heads).sum(-1))
        rows.append({"model": model, "n_seeds": s, "heads_per_seed": ",".join(str(int(k)) for k in mask.sum((1, 2))),
                     "seeds_with_heads": int((mask.sum((1, 2)) > 0).sum()),
                     "jaccard": obs, "null_within_layer_mean": _finite_mean(null_within),
                     "p_within_layer": _perm_p(null_within, obs),
                     "null_anywhere_mean": _finite_mean(null_any),
                     "p_anywhere": _perm_p(null_any, obs),
                     "layer_jaccard": obs_layer,
                     "layer_null_mean": _finite_mean(null_layer),
                     "p_layer": _perm_p(null_layer, obs_layer), "n_perm": n_perm})
    return pd.DataFrame(rows)


def pairwise_jaccard(stats_: pd.DataFrame, column: str = "passes") -> pd.DataFrame:
    """Jaccard index of every pair of seeds' head sets (NaN when both are empty)."""
    rows = []
    for model, st in stats_.groupby("model"):
        seeds, mask = head_masks(st, column)
        flat = mask.reshape(len(seeds), -1)
        for i in range(len(seeds)):
            for j in range(i + 1, len(seeds)):
                union = int((flat[i] | flat[j]).sum())
                inter = int((flat[i] & flat[j]).sum())
                rows.append({"model": model, "seed_a": seeds[i], "seed_b": seeds[j], "shared": inter, "union": union,
                             "jaccard": inter / union if union else np.nan})
    return pd.DataFrame(rows, columns=["model", "seed_a", "seed_b", "shared", "union", "jaccard"])


def seed_counts(stats_: pd.DataFrame, column: str = "passes") -> pd.DataFrame:
    """Per (model, layer, head): in how many seeds the head passes (``n_seeds_selecting``), of ``n_seeds``, and
    which seeds."""
    d = stats_.assign(_sel=stats_[column].astype(bool))
    out = d.groupby(["model", "layer", "head"]).agg(
        n_seeds_selecting=("_sel", "sum"), n_seeds=("seed", "nunique"),
        seeds=("seed", lambda s: " ".join(str(int(x)) for x in sorted(s[d.loc[s.index, "_sel"]]))))
    return out.reset_index().astype({"n_seeds_selecting": int})


def causal_agreement(tests: pd.DataFrame, alpha: float = ALPHA) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stage-4 null tests (:func:`lexprobe.analysis.nulls.null_tests`) at each seed's last checkpoint, one row per
    (family, model, seed); and per (family, model) the seeds' drops summarised, how many beat their null at
    ``alpha``, and Fisher's combined p over seeds."""
    last = at_last_checkpoint(tests)
    per = last[["family", "model", "seed", "step", "drop_r2", "null_mean", "null_q95", "n_random", "p", "z"]]
    per = per.sort_values(["family", "model", "seed"]).reset_index(drop=True)
    rows = []
    for (family, model), g in per.groupby(["family", "model"]):
        p = g["p"].dropna().to_numpy()
        rows.append({"family": family, "model": model, "n_seeds": len(g), "mean_drop": g["drop_r2"].mean(),
                     "sd_drop": g["drop_r2"].std(ddof=1) if len(g) > 1 else np.nan,
                     "n_significant": int((p < alpha).sum()),
                     "fisher_p": float(stats.combine_pvalues(p, method="fisher").pvalue) if len(p) else np.nan,
                     "min_attainable_p": float(1 / (1 + g["n_random"].min()))})
    return per, pd.DataFrame(rows)
