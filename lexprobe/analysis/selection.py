"""Head discovery: which heads' target->cue attention tracks disambiguation performance across development.

The original rule (per head, OLS across checkpoints of best-layer performance on the head's mean cue attention,
Benjamini-Hochberg FDR over heads, keep slope > 0 and q < .05) is reported together with the controls it lacked:

* **trend controls**: anything that grows during training correlates with a growing performance curve, so the
  same test is repeated (a) on first differences across consecutive checkpoints (do the head's attention changes
  coincide with the performance changes?), (b) with log10(step + 1) as a covariate (partial slope), and (c) as a
  permutation null on first differences (performance increments shuffled; at least :func:`perm_draws` shuffles,
  so that its floor 1/(n+1) is well below what BH over the seed's heads asks of a lone head);
* **previous-token control**: per head, a paired one-tailed t-test over sentences (at one checkpoint, the last
  by default) that cue attention exceeds the head's generic previous-token attention.

A head ``passes`` when it meets the original rule and the first-difference trend control (slope > 0, q < .05);
``Study(selection=...)`` picks another of :data:`RULES` (``lexprobe validate --rules`` scores them on the planted
organisms).
The log-step covariate is reported but not used for ``passes``: a performance curve that is flat and then rises
is not linear in log-step, so any head that changes after the rise survives that covariate (on the organism,
18-23 of 24 heads per seed did), while first differences ask for changes at the same checkpoints.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lexprobe.analysis.primitives import bh_within, empirical_p
from lexprobe.base.lazy import stats

ALPHA = 0.05
# stage 2's selection rules (``Study(selection=...)``): the stats columns a head must meet to pass
RULES = {"original": ("selected",), "trend": ("selected", "diff_ok"), "prev": ("selected", "beats_prev"),
         "both": ("selected", "diff_ok", "beats_prev")}
RULE_TITLES = {"original": "original rule", "trend": "original + trend", "prev": "original + prev-token",
               "both": "original + both"}
DEFAULT_RULE = "trend"


def passing(stats: pd.DataFrame, rule: str = DEFAULT_RULE) -> pd.Series:
    """Whether each head of ``stats`` meets a selection rule of :data:`RULES`."""
    if rule not in RULES:
        raise ValueError(f"selection rule {rule!r}: choose one of {tuple(RULES)}")
    return stats[list(RULES[rule])].all(axis=1)


MIN_STEPS = 4  # checkpoints a trajectory needs before a head can be tested

def ols(y: np.ndarray, *xs: np.ndarray) -> tuple[float, float]:
    """Slope and two-sided p of the first regressor in y ~ 1 + xs (NaN when degenerate)."""
    X = np.column_stack([np.ones_like(y), *xs])
    n, k = X.shape
    if n <= k or np.linalg.matrix_rank(X) < k:
        return np.nan, np.nan
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    sigma2 = resid @ resid / (n - k)
    cov = sigma2 * np.linalg.inv(X.T @ X)
    se = np.sqrt(cov[1, 1])
    if se == 0:
        return float(beta[1]), 0.0
    t = beta[1] / se
    return float(beta[1]), float(2 * stats.t.sf(abs(t), n - k))


def trajectories(heads: pd.DataFrame) -> pd.DataFrame:
    """Mean cue/previous-token attention and entropy per (model, seed, step, layer, head), over sentences."""
    keys = [k for k in ["model", "seed", "step", "layer", "head"] if k in heads.columns]
    return heads.groupby(keys, as_index=False)[["cue_attn", "prev_attn", "entropy"]].mean()


def permutation_p(dy_perms: np.ndarray, dx: np.ndarray) -> float:
    """One-sided permutation p that corr(dx, dy) is as large as observed; row 0 of ``dy_perms`` is the observed
    dy, the other rows are shuffles of it."""
    if dx.std() == 0 or dy_perms[0].std() == 0:
        return np.nan
    xc = (dx - dx.mean()) / dx.std()
    yc = (dy_perms - dy_perms.mean(1, keepdims=True)) / dy_perms.std(1, keepdims=True)
    corr = yc @ xc / len(dx)
    return empirical_p(corr[1:], corr[0])


def perm_draws(n_tests: int, alpha: float = ALPHA, margin: float = 5.0) -> int:
    """Permutations a rank p needs so that its floor 1/(n+1) is ``margin`` times below alpha / ``n_tests`` (what BH
    over ``n_tests`` asks of the single strongest test): 2399 for a 24-head organism, 38399 for 384 heads."""
    return int(np.ceil(margin * n_tests / alpha)) - 1


def discover(heads: pd.DataFrame, best: pd.DataFrame, score: str = "r2", control_step: int | None = None,
             n_perm: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per-head statistics for every (model, seed); see the module docstring for the tests."""
    traj = trajectories(heads)
    rng = np.random.default_rng(seed)
    out = []
    for (model, sd), tr in traj.groupby(["model", "seed"]):
        perf = best[(best["model"] == model) & (best["seed"] == sd)].set_index("step")[score]
        steps = np.array(sorted(set(tr["step"]) & set(perf.index)))
        if len(steps) < MIN_STEPS:
            raise ValueError(f"{model} seed {sd}: head discovery needs >= {MIN_STEPS} checkpoints, got {len(steps)}")
        y = perf.loc[steps].to_numpy(float)
        logstep = np.log10(steps + 1)
        last = control_step if control_step is not None else int(steps.max())
        dy = np.diff(y)
        draws = max(n_perm, perm_draws(tr.groupby(["layer", "head"]).ngroups))
        dy_perms = np.vstack([dy, [rng.permutation(dy) for _ in range(draws)]])
        ctrl = heads[(heads["model"] == model) & (heads["seed"] == sd) & (heads["step"] == last)]
        for (layer, head), h in tr.groupby(["layer", "head"]):
            a = h.set_index("step").loc[steps, "cue_attn"].to_numpy(float)
            slope, p = ols(y, a)
            slope_log, p_log = ols(y, a, logstep)
            slope_diff, p_diff = ols(np.diff(y), np.diff(a))
            c = ctrl[(ctrl["layer"] == layer) & (ctrl["head"] == head)]
            diff = (c["cue_attn"] - c["prev_attn"]).dropna()
            t_prev, p_prev = stats.ttest_1samp(diff, 0.0, alternative="greater") if len(diff) > 1 else (np.nan, np.nan)
            out.append({
                "model": model, "seed": sd, "layer": int(layer), "head": int(head),
                "slope": slope, "p": p, "r": np.corrcoef(a, y)[0, 1] if a.std() > 0 else np.nan,
                "slope_logstep": slope_log, "p_logstep": p_log, "slope_diff": slope_diff, "p_diff": p_diff,
                "p_perm_diff": permutation_p(dy_perms, np.diff(a)), "n_perm": draws,
                "cue_attn_first": a[0], "cue_attn_last": a[-1],
                "prev_attn_last": float(c["prev_attn"].mean()) if len(c) else np.nan,
                "t_prev": float(t_prev), "p_prev": float(p_prev), "control_step": last,
            })
    df = pd.DataFrame(out)
    for col in ("p", "p_logstep", "p_diff", "p_perm_diff", "p_prev"):
        df["q" + col[1:]] = bh_within(df, col, ["model", "seed"])
    df["selected"] = (df["slope"] > 0) & (df["q"] < ALPHA)
    df["logstep_ok"] = (df["slope_logstep"] > 0) & (df["q_logstep"] < ALPHA)
    df["diff_ok"] = (df["slope_diff"] > 0) & (df["q_diff"] < ALPHA)
    df["perm_ok"] = df["q_perm_diff"] < ALPHA
    df["beats_prev"] = df["q_prev"] < ALPHA
    df["passes"] = passing(df)
    return df
