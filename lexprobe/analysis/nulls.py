"""Stage 4 statistics: how much does an intervention hurt disambiguation, against which null?

All functions take tidy tables (best-layer scores per condition and checkpoint, pair-level distances) and a
*design* table describing each condition (``condition, family, role, draw, n_heads, heads``; ``role`` is
``target``, ``random`` or ``single``). The effect of an intervention is the **drop** of the best-layer score
(R^2, AUC) from the intact model at the same checkpoint, so a harmful intervention has a positive effect.

* :func:`null_tests`: per family and checkpoint, the target set's drop against the drops of random same-size head
  sets. With n random sets the rank p = (1 + #random drops >= target drop) / (1 + n) can be no smaller than
  1/(n + 1); where that floor is not well below alpha (``RANK_RESOLVES``: at most alpha / 5) the test is a
  one-sided t prediction test of the target against the random sets' mean and sd (t = (target - mean) /
  (sd * sqrt(1 + 1/n)), n - 1 df), which has no floor. ``method`` says which one ``p`` is; both are kept.
* :func:`causal_map`: each single head's drop per checkpoint, with a paired item bootstrap (words resampled, the
  same draws for the intact and ablated model): one-sided p that the drop is > 0 from the normal approximation
  z = drop / bootstrap sd (a rank over B draws cannot go below 1/(B + 1), and BH over heads x checkpoints
  needs p <= 0.05 / m for a lone cell: 8.7e-5 for the organism's 576 cells), the rank p kept as ``p_rank``;
  BH-FDR over the heads and checkpoints of each (model, seed), as ``fdr_family`` says.
* :func:`agreement`: per (model, seed), the causal map's significant heads at the last checkpoint against the
  heads that pass correlational discovery (stage 2): counts, Jaccard, Fisher's exact test.
* :func:`study_regression`: the original study's regression across checkpoints (effect ~ log step + target vs
  random); its rows share checkpoints and sets, so its inference is a two-way cluster bootstrap (checkpoints and
  random sets resampled), beside a set-level test of the discovered set against single random sets.
* :func:`beats_null_after_onset`: how many checkpoints from stage 1's onset on beat their null, Holm-corrected.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lexprobe.analysis.primitives import (
    at_last_checkpoint,
    bh_within,
    empirical_p,
    holm_rejects,
    stays_from,
    weighted_auc,
    weighted_r,
    word_weights,
)
from lexprobe.analysis.selection import ALPHA
from lexprobe.base.heads import heads_name
from lexprobe.base.lazy import stats

KEYS = ["model", "seed", "step"]
# a design row is one (model, seed, condition): a condition is named by its intervention (a head set), and one set
# can be drawn for two seeds, e.g. a random set measured at every checkpoint for one and at the last for the other
DESIGN_KEYS = ["model", "seed", "condition"]
REGRESSION_DRAWS = 2000  # cluster-bootstrap draws of the study's regression: its smallest two-sided p is 2/2001
RANK_RESOLVES = ALPHA / 5  # a rank test is used only where its floor 1/(n + 1) is at most this
MAP_FAMILY = "heads x checkpoints of one (model, seed)"


def rank_floor(n: int) -> float:
    """The smallest p a rank test against ``n`` draws can give."""
    return 1.0 / (n + 1)


def t_prediction_p(null: np.ndarray, obs: float) -> float:
    """One-sided p that ``obs`` exceeds a new draw of the null (normal, mean and sd estimated from ``null``)."""
    if len(null) < 3 or not np.isfinite(obs):
        return np.nan
    sd = null.std(ddof=1)
    if sd == 0:
        return 0.0 if obs > null.mean() else 1.0
    return float(stats.t.sf((obs - null.mean()) / (sd * np.sqrt(1 + 1 / len(null))), len(null) - 1))


def drops(best: pd.DataFrame, scores: tuple[str, ...] = ("r2", "auc")) -> pd.DataFrame:
    """Per intervened (condition, model, seed, step): the intact score, the intervened score and their drop."""
    base = best[best["condition"] == "intact"].set_index(KEYS)[list(scores)]
    out = best[best["condition"] != "intact"].join(base, on=KEYS, rsuffix="_intact")
    for s in scores:
        out[f"drop_{s}"] = out[f"{s}_intact"] - out[s]
    return out.reset_index(drop=True)


def vs_null(null: np.ndarray, obs: float) -> dict[str, float | str]:
    """One observed effect against ``len(null)`` random draws: ``p`` by rank where its floor 1/(n + 1) resolves
    (at most ``RANK_RESOLVES``), else by the t prediction test; both kept, with the floor and the null's summary."""
    n = len(null)
    p_rank = empirical_p(null, obs) if n else np.nan
    rank = rank_floor(n) <= RANK_RESOLVES
    p_t = t_prediction_p(null, obs)
    sd = null.std(ddof=1) if n > 1 else np.nan
    return {"n_random": n, "null_mean": null.mean() if n else np.nan,
            "null_q05": np.quantile(null, 0.05) if n else np.nan,
            "null_q95": np.quantile(null, 0.95) if n else np.nan, "null_sd": sd,
            "p": p_rank if rank else p_t, "method": "rank" if rank else "t prediction",
            "p_rank": p_rank, "p_floor": rank_floor(n), "p_t": p_t,
            "z": (obs - null.mean()) / sd if sd and np.isfinite(sd) and sd > 0 else np.nan}


def null_tests(effects: pd.DataFrame, design: pd.DataFrame, score: str = "drop_r2") -> pd.DataFrame:
    """Target set vs random same-size sets, per (family, model, seed, step)."""
    eff = effects.merge(design[[*DESIGN_KEYS, "family", "role"]], on=DESIGN_KEYS, validate="many_to_one")
    rows = []
    for (family, model, seed, step), g in eff.groupby(["family", *KEYS]):
        target = g.loc[g["role"] == "target", score]
        if target.empty:
            continue
        obs = float(target.iloc[0])
        null = g.loc[g["role"] == "random", score].to_numpy(float)
        rows.append({"family": family, "model": model, "seed": seed, "step": step, score: obs, **vs_null(null, obs)})
    columns = ["family", *KEYS, score, *vs_null(np.zeros(0), 0.0)]  # also when no set was tested
    return pd.DataFrame(rows, columns=columns)


def weighted_best_r2(W: np.ndarray, D: np.ndarray, y: np.ndarray, by: str = "r2",
                     different: np.ndarray | None = None) -> np.ndarray:
    """R^2 of distance vs ``y`` at the best layer under pair weights ``W`` (B, pairs) for distances ``D`` (pairs,
    layers), the layer chosen per draw as :func:`~lexprobe.analysis.performance.best_layer` chooses it ``by``
    ("r2": largest R^2; "signed": most negative r; "auc": largest AUC of ``different``-sense vs same-sense pairs);
    layers whose distances are rounding noise are ignored. Returns (B,)."""
    r2 = weighted_r(W, D, y, squared=True)
    if by == "r2":
        return np.nanmax(np.where(np.isnan(r2), -np.inf, r2), axis=1)
    if by == "signed":
        metric = -np.sign(weighted_r(W, D, y)) * r2
    elif by == "auc" and different is not None:
        metric = weighted_auc(W, D, different)
    else:
        raise ValueError(f"by must be r2, signed or auc (auc needs the different-sense mask), not {by!r}")
    metric = np.where(np.isnan(metric), -np.inf, metric)
    best = r2[np.arange(len(W)), metric.argmax(1)]
    return np.where(np.isfinite(metric).any(1), best, np.nan)


def best_r2_draws(g: pd.DataFrame, base: str, conditions: list[str], target: str, n_boot: int,
                  rng: np.random.Generator, by: str = "r2") -> dict[str, np.ndarray]:
    """Best-layer R^2 of ``base`` and each of ``conditions`` at one checkpoint (``g``: its pair-level distances,
    column ``condition``) under the observed sample (index 0) and ``n_boot`` paired item-bootstrap draws (the same
    words drawn for every condition), on the pairs of ``base``; layers chosen per draw ``by`` the study's rule."""
    wanted = [base, *conditions]
    sub = g[g["condition"].isin(wanted) & g["distance"].notna()]
    cube, rows, layers, present = _cube(sub, wanted)
    keep = ~np.isnan(cube[0]).all(1)  # the pairs base measured, at the layers it measured
    base_layers = ~np.isnan(cube[0]).all(0)
    index = rows[keep]
    ref = g[g["condition"] == base]
    info = ref.drop_duplicates("pair_key").set_index(["word", "pair_key"])
    ycol = "mean_relatedness" if target == "relatedness" else "same"
    y = info[ycol].reindex(index).to_numpy(float)
    different = ~info["same"].reindex(index).to_numpy(bool)
    W = word_weights(index.get_level_values("word").to_numpy(), n_boot, rng, observed=True)  # row 0: observed
    return {c: weighted_best_r2(W, cube[i][keep][:, base_layers], y, by, different)
            for i, c in enumerate(wanted) if present[i]}


def _cube(sub: pd.DataFrame, conditions: list[str]) -> tuple[np.ndarray, pd.MultiIndex, np.ndarray, np.ndarray]:
    """Distances as (condition, pair, layer), NaN where not measured: pairs as (word, pair_key) and layers sorted
    (the order a pivot table gives them), and which conditions have any value."""
    pair_codes = sub.groupby(["word", "pair_key"], sort=True).ngroup().to_numpy()
    rows = pd.MultiIndex.from_frame(sub[["word", "pair_key"]].drop_duplicates()).sort_values()
    layers, layer_codes = np.unique(sub["layer"].to_numpy(), return_inverse=True)
    cond_codes = pd.Categorical(sub["condition"], categories=conditions).codes
    cube = np.full((len(conditions), len(rows), len(layers)), np.nan)
    cube[cond_codes, pair_codes, layer_codes] = sub["distance"].to_numpy(float)
    return cube, rows, layers, np.bincount(cond_codes, minlength=len(conditions)) > 0


def causal_map(pairs: pd.DataFrame, design: pd.DataFrame, target: str = "same", n_boot: int = 200,
               seed: int = 0, by: str = "r2") -> pd.DataFrame:
    """Single-head ablations: drop in best-layer R^2 per (model, seed, step, layer, head) with a paired item
    bootstrap p (one-sided, drop > 0) and BH q over the heads and checkpoints of each (model, seed); the best
    layer is re-chosen ``by`` the study's rule in every draw (see :func:`weighted_best_r2`).

    ``pairs`` holds pair-level distances of the intact condition and of every ``single`` condition of ``design``
    (columns condition, model, seed, step, layer, word, pair_key, distance, same, mean_relatedness).
    """
    single = design[design["role"] == "single"].drop_duplicates("condition").set_index("condition")  # same head
    rng = np.random.default_rng(seed)
    rows = []
    for (model, sd, step), g in pairs.groupby(KEYS):
        conds = [c for c in g["condition"].unique() if c in single.index]
        if not (g["condition"] == "intact").any() or not conds:
            continue
        r2 = best_r2_draws(g, "intact", conds, target, n_boot, rng, by)
        for cond in conds:
            layer, head = single.loc[cond, "heads"][0]
            rows.append({"model": model, "seed": sd, "step": step, "layer": int(layer), "head": int(head),
                         "condition": cond, **effect_interval(r2["intact"] - r2[cond], "drop_r2")})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    return with_fdr(out, "drop_r2", ["model", "seed"], MAP_FAMILY)


def effect_interval(effect: np.ndarray, name: str) -> dict[str, float]:
    """An effect's observed value (``effect[0]``) with its bootstrap 95% interval, standard error, the one-sided
    normal-approximation p that it is > 0, and the rank p (share of draws without an effect) kept as ``p_rank``."""
    draws = effect[1:]
    se = draws.std(ddof=1)
    return {name: effect[0], "boot_low": np.quantile(draws, 0.025), "boot_high": np.quantile(draws, 0.975),
            "boot_se": se, "p": _normal_p(effect[0], se), "p_rank": empirical_p(-draws, 0.0, tol=0.0)}


def with_fdr(table: pd.DataFrame, effect: str, family: list[str], family_name: str) -> pd.DataFrame:
    """BH q within each ``family`` group, the family named and sized, and ``significant`` (q < alpha, effect > 0)."""
    out = table.copy()
    out["q"] = bh_within(out, "p", family)
    out["fdr_family"] = family_name
    out["fdr_family_size"] = out.groupby(family)["p"].transform("size")
    out["significant"] = (out["q"] < ALPHA) & (out[effect] > 0)
    return out


def _normal_p(drop: float, se: float) -> float:
    """One-sided p that a drop is > 0 from its bootstrap standard error (normal approximation)."""
    if not np.isfinite(drop):
        return np.nan
    if not se > 0:
        return 0.0 if drop > 0 else 1.0
    return float(stats.norm.sf(drop / se))


def agreement(cmap: pd.DataFrame, discovery: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """Per (model, seed): heads causally significant at ``step`` (default: the last) vs heads passing stage 2."""
    rows = []
    for (model, sd), g in cmap.groupby(["model", "seed"]):
        at = at_last_checkpoint(g) if step is None else g[g["step"] == step]
        causal = {(r.layer, r.head) for r in at.itertuples() if r.significant}
        d = discovery[(discovery["model"] == model) & (discovery["seed"] == sd)]
        passing = {(r.layer, r.head) for r in d.itertuples() if r.passes}
        n = len(d)
        both = len(causal & passing)
        table = [[both, len(passing - causal)], [len(causal - passing), n - len(causal | passing)]]
        union = causal | passing
        rows.append({"model": model, "seed": sd, "step": int(at["step"].iloc[0]), "n_heads": n,
                     "causal": len(causal), "discovered": len(passing), "both": both,
                     "jaccard": both / len(union) if union else np.nan,
                     "fisher_p": stats.fisher_exact(table, alternative="greater")[1],
                     "causal_heads": heads_name(sorted(causal)), "discovered_heads": heads_name(sorted(passing))})
    return pd.DataFrame(rows)


def first_significant(tests: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Per (family, model, seed): the first step from which the target set's drop beats its null at every later
    checkpoint (NaN if it never does). Each checkpoint is tested at ``alpha``; asking all later ones to reject is
    an intersection-union test, so the claim "from this step on" keeps its error at ``alpha`` uncorrected."""
    rows = []
    for (family, model, sd), g in tests.sort_values("step").groupby(["family", "model", "seed"]):
        first = stays_from(g["step"].to_numpy(), (g["p"] < alpha).to_numpy())
        rows.append({"family": family, "model": model, "seed": sd, "effect_from_step": first})
    return pd.DataFrame(rows)


def study_regression(effects: pd.DataFrame, design: pd.DataFrame, families: tuple[str, ...],
                     score: str = "drop_r2", n_boot: int = REGRESSION_DRAWS, seed: int = 0) -> pd.DataFrame:
    """The original study's test across development: per (family, model, seed), OLS of the effect on
    log10(step + 1) and a target indicator (the discovered heads = 1, random same-size sets = 0) over every
    checkpoint at which the family's target was measured (``design``: one row per (model, seed, condition)).

    The rows are not independent: every set at a checkpoint shares its intact model, and every checkpoint of a set
    its heads. Intervals and p come from a two-way cluster bootstrap of ``n_boot`` draws: checkpoints resampled
    with replacement and, independently, the random sets (the discovered set, the one in question, kept in every
    draw), each drawn checkpoint and set bringing all its rows. The 95% interval is the draws' 2.5-97.5%
    percentiles; the two-sided p is twice the smaller share of draws on either side of 0, counting the observed fit
    (no smaller than 2 / (n_boot + 1)). This holds the discovered set fixed: it asks whether its effect differs
    from the random sets' average, not whether it stands out among sets, the study's null (the discovered set no
    different from a random one). That is ``target_p_sets``: each set's mean effect over the checkpoints (which all
    sets share), the discovered set's against the random sets' by a two-sided t prediction test (n - 1 df), the
    set the unit. ``target_p_ols``: the conventional OLS p, which takes every row as independent, for comparison."""
    import statsmodels.api as sm

    eff = effects.merge(design[[*DESIGN_KEYS, "family", "role", "scope"]], on=DESIGN_KEYS, validate="many_to_one")
    eff = eff[eff["family"].isin(families) & eff["role"].isin(["target", "random"]) & (eff["scope"] == "all")]
    rng = np.random.default_rng(seed)
    rows = []
    for (family, model, sd), g in eff.groupby(["family", "model", "seed"]):
        g = g.dropna(subset=[score])
        X = sm.add_constant(np.column_stack([np.log10(g["step"].to_numpy(float) + 1),
                                             (g["role"] == "target").to_numpy(float)]))
        if len(g) < 4 or np.linalg.matrix_rank(X) < 3:
            continue
        y = g[score].to_numpy(float)
        fit = sm.OLS(y, X).fit()
        draws = _least_squares(X, y, _crossed_weights(g, n_boot, rng))
        low, high = np.nanquantile(draws[:, 2], [0.025, 0.975])
        rows.append({"family": family, "model": model, "seed": sd, "n": len(g), "n_steps": g["step"].nunique(),
                     "n_sets": g["condition"].nunique(), "target_coef": fit.params[2], "target_low": low,
                     "target_high": high, "target_p": _bootstrap_p(draws[:, 2]),
                     "target_p_sets": _set_level_p(g, score), "log_step_coef": fit.params[1],
                     "log_step_p": _bootstrap_p(draws[:, 1]), "target_p_ols": fit.pvalues[2]})
    return pd.DataFrame(rows)


def _crossed_weights(g: pd.DataFrame, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Row weights (n_boot, rows) of a two-way cluster bootstrap of ``g`` (columns step, condition, role): how often
    a row's checkpoint was drawn (checkpoints with replacement) times how often its set was drawn (the random sets
    with replacement; the target set once in every draw)."""
    steps, step_of = np.unique(g["step"].to_numpy(), return_inverse=True)
    sets, set_of = np.unique(g["condition"].to_numpy(), return_inverse=True)
    random = ~np.isin(sets, g.loc[g["role"] == "target", "condition"].to_numpy())
    per_step = rng.multinomial(len(steps), np.full(len(steps), 1 / len(steps)), size=n_boot)
    per_set = np.ones((n_boot, len(sets)))
    per_set[:, random] = rng.multinomial(random.sum(), np.full(random.sum(), 1 / random.sum()), size=n_boot)
    return per_step[:, step_of] * per_set[:, set_of]


def _least_squares(X: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted least-squares coefficients (draws, columns of ``X``) under each row of weights ``W`` (draws, rows);
    NaN for a draw whose weighted design is singular (e.g. every drawn checkpoint the same)."""
    A = np.einsum("bn,ni,nj->bij", W, X, X)
    v = np.einsum("bn,ni,n->bi", W, X, y)
    out = np.full(v.shape, np.nan)
    ok = np.linalg.matrix_rank(A) == X.shape[1]
    out[ok] = np.linalg.solve(A[ok], v[ok][..., None])[..., 0]
    return out


def _set_level_p(g: pd.DataFrame, score: str) -> float:
    """Two-sided t prediction p of the target set's mean ``score`` over checkpoints against the random sets'."""
    per_set = g.groupby("condition")[score].mean()
    target = per_set.index.isin(g.loc[g["role"] == "target", "condition"])
    upper = t_prediction_p(per_set[~target].to_numpy(float), float(per_set[target].iloc[0]))
    return float(np.minimum(1.0, 2 * np.minimum(upper, 1 - upper)))


def _bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p that a coefficient is 0: twice the smaller share of ``draws`` at or beyond 0 on either
    side, the observed fit counted as a draw on each (no smaller than 2 / (draws + 1)); NaN draws are left out."""
    d = draws[np.isfinite(draws)]
    return min(1.0, 2 * min(empirical_p(d, 0.0, tol=0.0), empirical_p(-d, 0.0, tol=0.0)))


def beats_null_after_onset(tests: pd.DataFrame, onsets: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Per (family, model, seed) of :func:`null_tests`: the checkpoints at or after the seed's stage-1 onset
    (``onsets``: columns model, seed, onset_step; before it nothing is disambiguated, and none without one), how
    many beat the null after Holm's correction across them (family-wise error ``alpha``), and whether any could
    (``can_reject``: the smallest p their tests can give, a rank's floor 1/(n + 1) or 0 for the t prediction test,
    is at most ``alpha`` / checkpoints)."""
    on = tests.merge(onsets[["model", "seed", "onset_step"]], on=["model", "seed"], how="left")
    rows = []
    for (family, model, sd), g in on.groupby(["family", "model", "seed"]):
        after = g[(g["step"] >= g["onset_step"]) & g["p"].notna()]
        floor = np.where(after["method"] == "rank", after["p_floor"], 0.0)
        beats = holm_rejects(after["p"], alpha)
        rows.append({"family": family, "model": model, "seed": sd, "onset_step": g["onset_step"].iloc[0],
                     "checkpoints": len(after), "beats_null": int(beats),
                     "can_reject": len(after) > 0 and bool(floor.min() <= alpha / len(after))})
    return pd.DataFrame(rows, columns=["family", "model", "seed", "onset_step", "checkpoints", "beats_null",
                                       "can_reject"])
