"""Performance metrics, inflection detection and head discovery on data with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lexprobe.analysis.curves import _bootstrap_scores, inflections
from lexprobe.analysis.performance import SCORE_OF, auc, best_layer, performance
from lexprobe.analysis.primitives import (
    at_last_checkpoint,
    bh,
    bh_within,
    empirical_p,
    holm_rejects,
    weighted_auc,
    weighted_r,
    word_weights,
)
from lexprobe.analysis.selection import discover
from lexprobe.checkpoints.suites import RIVTROTT_STEPS

STEPS = np.array(RIVTROTT_STEPS)


def pair_table(rng: np.random.Generator, steps=RIVTROTT_STEPS, layers: dict | None = None,
               target_noise: float = 0.05) -> pd.DataFrame:
    """Pair-level distances for 60 pairs of 10 words x layers x steps. ``layers`` maps a layer to its signal
    direction (+1: related / same-sense pairs closer, as in real models; -1: the wrong way). The signal is 0 up to
    step 500, grows linearly in log-step to step 20000, then stays."""
    layers = layers or {0: 0.0, 1: 0.5, 2: 1.0}
    rows = []
    growth = np.clip((np.log10(np.asarray(steps) + 1) - np.log10(501)) / (np.log10(20001) - np.log10(501)), 0, 1)
    for pair in range(60):
        same = pair % 3 == 0
        rel = rng.uniform(3, 4) if same else rng.uniform(0, 2)
        for step, g in zip(steps, growth):
            for layer, direction in layers.items():
                dist = 0.5 - direction * 0.1 * g * rel + rng.normal(0, target_noise)
                rows.append({"model": "m", "seed": 0, "step": int(step), "layer": layer, "word": f"w{pair // 6}",
                             "pair_key": f"p{pair}", "distance": dist, "same": same, "mean_relatedness": rel})
    return pd.DataFrame(rows)


def test_auc_against_mann_whitney():
    rng = np.random.default_rng(0)
    s, pos = rng.normal(size=50), rng.random(50) < 0.4
    u = stats.mannwhitneyu(s[pos], s[~pos]).statistic
    assert auc(s, pos) == pytest.approx(u / (pos.sum() * (~pos).sum()))


@pytest.mark.parametrize("target", ["relatedness", "same"])
def test_performance_equals_a_per_checkpoint_computation(target):
    """The grouped computation gives, per (seed, step, layer), what np.corrcoef and :func:`auc` give on that group
    alone, including the groups that must come out undefined: rounding-noise distances (layer 0 here), a constant
    target, fewer than 3 pairs, a missing distance (r over the finite pairs; AUC undefined)."""
    table = pd.concat([pair_table(np.random.default_rng(s), steps=(0, 1000, 143000)).assign(seed=s) for s in (0, 1)])
    flat = table["layer"] == 0
    table.loc[flat, "distance"] = 0.5 + 1e-12 * np.random.default_rng(2).random(flat.sum())
    constant = (table["seed"] == 1) & (table["step"] == 0) & (table["layer"] == 1)
    table.loc[constant, ["mean_relatedness", "same"]] = [2.0, True]
    tiny = (table["seed"] == 1) & (table["step"] == 1000) & (table["layer"] == 2)
    table = table[~tiny | table["pair_key"].isin(["p0", "p1"])].copy()
    gap = (table["seed"] == 0) & (table["step"] == 1000) & (table["layer"] == 1) & (table["pair_key"] == "p5")
    table.loc[gap, "distance"] = np.nan
    perf = performance(table, target=target).set_index(["seed", "step", "layer"])
    assert len(perf) == 2 * 3 * 3
    for (seed, step, layer), g in table.groupby(["seed", "step", "layer"]):
        row = perf.loc[(seed, step, layer)]
        y = (g["mean_relatedness"] if target == "relatedness" else g["same"]).to_numpy(float)
        d = g["distance"].to_numpy(float)
        ok = np.isfinite(d)
        defined = layer > 0 and ok.sum() > 2 and y[ok].std() > 0
        r = np.corrcoef(d[ok], y[ok])[0, 1] if defined else np.nan
        assert row["r"] == pytest.approx(r, abs=1e-12, nan_ok=True), (seed, step, layer)
        assert row["r2_signed"] == pytest.approx(-np.sign(r) * r * r, abs=1e-12, nan_ok=True)
        assert row["auc"] == pytest.approx(auc(d, ~g["same"].to_numpy(bool)), nan_ok=True), (seed, step, layer)
        assert row["n_pairs"] == ok.sum()
    assert perf["r"].isna().sum() == 6 + 1 + 1  # layer 0 everywhere, the constant target, the 2-pair group
    assert np.isnan(perf.loc[(0, 1000, 1), "auc"]) and np.isfinite(perf.loc[(0, 1000, 1), "r"])


@pytest.mark.parametrize("target", ["relatedness", "same"])
def test_signed_best_layer_refuses_the_wrong_direction(target):
    """Layer 1 separates senses the wrong way (different-sense / unrelated pairs closer), more strongly than
    layer 2 separates them the right way: the study's sign-blind R^2 picks layer 1, the signed rule and AUC
    pick layer 2, for either target."""
    table = pair_table(np.random.default_rng(1), steps=(143000,), layers={1: -1.0, 2: 0.5}, target_noise=0.03)
    perf = performance(table, target=target).set_index("layer")
    assert perf.loc[1, "r"] > 0 > perf.loc[2, "r"]  # right way = negative r, for relatedness and same = 1
    assert perf.loc[1, "r2_signed"] < 0 < perf.loc[2, "r2_signed"]
    assert perf.loc[1, "auc"] < 0.5 < perf.loc[2, "auc"]
    assert perf.loc[2, "r2_signed"] == pytest.approx(perf.loc[2, "r2"])
    assert perf.loc[1, "r2"] > perf.loc[2, "r2"]
    chosen = {by: best_layer(perf.reset_index(), by=by)["best_layer"].item() for by in SCORE_OF}
    assert chosen == {"r2": 1, "signed": 2, "auc": 2}
    with pytest.raises(ValueError, match="by must be one of"):
        best_layer(perf.reset_index(), by="r")
    with pytest.raises(ValueError, match="target must be one of"):
        performance(table, target="sense")


def test_item_bootstrap_interval_brackets_the_estimate():
    pairs = pair_table(np.random.default_rng(5))
    best = best_layer(performance(pairs))
    r = inflections(best, pairs, n_boot=60).iloc[0]
    assert r["n_boot"] == 60 and r["curve_model"] not in (None, "flat")
    for k in ("onset", "saturation"):
        assert r[f"{k}_boot_low_step"] <= r[f"{k}_step"] <= r[f"{k}_boot_high_step"]
    assert 250 <= r["onset_step"] <= 1000  # planted: the signal starts growing at step 500
    assert r["onset_boot_high_step"] / r["onset_boot_low_step"] < 10  # informative, not the whole range


def test_item_bootstrap_refits_through_the_given_map():
    """The bootstrap refits go through ``map_fn`` (the stage runs them on the worker pool): one call per (model,
    seed) with every draw, and the same table as the plain ``map``."""
    pairs = pair_table(np.random.default_rng(5))
    best = best_layer(performance(pairs))
    calls = []

    def recording(fn, items):
        calls.append(len(items))
        return [fn(i) for i in reversed(items)][::-1]  # another evaluation order, the same results

    pd.testing.assert_frame_equal(inflections(best, pairs, n_boot=30, map_fn=recording),
                                  inflections(best, pairs, n_boot=30))
    assert calls == [30]


def test_item_bootstrap_follows_the_signed_rule():
    pairs = pair_table(np.random.default_rng(2), layers={1: -1.0, 2: 0.6})
    perf = performance(pairs)
    signed = inflections(best_layer(perf, by="signed"), pairs, n_boot=40, by="signed").iloc[0]
    assert signed["curve_model"] not in (None, "flat") and 250 <= signed["onset_step"] <= 1000
    assert signed["onset_boot_low_step"] <= signed["onset_step"] <= signed["onset_boot_high_step"]
    with pytest.raises(ValueError, match="n_boot=0"):
        inflections(best_layer(perf, by="signed"), pairs, n_boot=10, by="signed", score="r2")


def test_item_bootstrap_follows_the_auc_rule():
    """By AUC, the item bootstrap re-chooses the best layer by AUC per draw and gives intervals."""
    pairs = pair_table(np.random.default_rng(5))
    r = inflections(best_layer(performance(pairs), by="auc"), pairs, n_boot=40, by="auc").iloc[0]
    assert r["n_boot"] == 40 and r["curve_model"] not in (None, "flat") and 250 <= r["onset_step"] <= 1000
    for k in ("onset", "saturation"):
        assert np.isfinite([r[f"{k}_boot_low_step"], r[f"{k}_boot_high_step"]]).all()
        assert r[f"{k}_boot_low_step"] <= r[f"{k}_step"] <= r[f"{k}_boot_high_step"]
    assert r["onset_boot_high_step"] / r["onset_boot_low_step"] < 10


@pytest.mark.parametrize("exclude_embedding", [False, True])
@pytest.mark.parametrize("by", list(SCORE_OF))
def test_item_bootstrap_at_unit_weights_is_best_layer(by, exclude_embedding):
    """Every word drawn once, the bootstrap's score per checkpoint is best_layer's (AUC: to the last bit)."""
    pairs = pair_table(np.random.default_rng(2), steps=(0, 1000, 143000), layers={0: 0.0, 1: -1.0, 2: 0.6})
    pairs.loc[pairs["layer"] == 0, "distance"] -= 0.05 * pairs["same"]  # layer 0 wins step 0 unless excluded
    for target in ("relatedness", "same"):
        best = best_layer(performance(pairs, target=target), exclude_embedding=exclude_embedding, by=by)
        steps, obs = _bootstrap_scores(pairs, 0, np.random.default_rng(0), target, exclude_embedding, by,
                                       observed=True)
        np.testing.assert_array_equal(steps, best["step"])
        score = best[SCORE_OF[by]].to_numpy()
        if by == "auc":
            np.testing.assert_array_equal(obs[0], score)
        else:
            np.testing.assert_allclose(obs[0], score, rtol=0, atol=1e-12)


def synthetic_heads(rng: np.random.Generator, steps: np.ndarray, perf: np.ndarray) -> pd.DataFrame:
    """4 heads x 40 sentences: L1H0 tracks performance (after onset), L0H1 grows steadily with log-step
    (a monotone trend, not tracking), L0H0 is a previous-token head, L1H1 is noise."""
    rows = []
    logstep = np.log10(steps + 1)
    for i, step in enumerate(steps):
        for s in range(40):
            eps = rng.normal(0, 0.01, 4)
            rows += [
                {"sentence_id": s, "layer": 1, "head": 0, "cue_attn": 0.1 + 2 * perf[i] + eps[0], "prev_attn": 0.1},
                {"sentence_id": s, "layer": 0, "head": 1, "cue_attn": 0.05 * logstep[i] + eps[1], "prev_attn": 0.1},
                {"sentence_id": s, "layer": 0, "head": 0, "cue_attn": 0.5 + eps[2], "prev_attn": 0.9},
                {"sentence_id": s, "layer": 1, "head": 1, "cue_attn": 0.2 + eps[3], "prev_attn": 0.2},
            ]
            for r in rows[-4:]:
                r.update(model="m", seed=0, step=int(step), entropy=1.0)
    return pd.DataFrame(rows)


def test_head_discovery_separates_tracking_from_trend_and_prev_token():
    rng = np.random.default_rng(0)
    steps = STEPS
    perf = np.where(steps > 512, 0.02 + 0.1 * (np.log10(steps + 1) - np.log10(513)), 0.005)
    perf = perf + rng.normal(0, 0.003, len(steps))
    heads = synthetic_heads(rng, steps, perf)
    best = pd.DataFrame({"model": "m", "seed": 0, "step": steps, "r2": perf})
    st = discover(heads, best, n_perm=500).set_index(["layer", "head"])
    assert st.loc[(1, 0), "passes"] and st.loc[(1, 0), "beats_prev"] and st.loc[(1, 0), "perm_ok"]
    assert st.loc[(0, 1), "selected"]  # the original rule picks the merely trending head ...
    assert not st.loc[(0, 1), "passes"] and not st.loc[(0, 1), "logstep_ok"]  # ... the trend controls reject it
    assert not st.loc[(0, 0), "beats_prev"]  # previous-token head fails the control
    assert not st.loc[(1, 1), "selected"]


def test_head_permutation_null_is_sized_from_its_family():
    """The permutation p of each head is corrected by BH over the seed's heads: its rank floor 1/(n+1) must sit
    well below alpha / heads, so n_perm grows with the head count (here 4 heads: 0.05/4 = 0.0125 needs >= 399)."""
    from lexprobe.analysis.selection import perm_draws

    rng = np.random.default_rng(0)
    perf = np.where(STEPS > 512, 0.02 + 0.1 * (np.log10(STEPS + 1) - np.log10(513)), 0.005)
    heads = synthetic_heads(rng, STEPS, perf + rng.normal(0, 0.003, len(STEPS)))
    best = pd.DataFrame({"model": "m", "seed": 0, "step": STEPS, "r2": perf})
    st = discover(heads, best, n_perm=50)
    assert perm_draws(4) == 399 and (st["n_perm"] == 399).all()
    assert (1 / (st["n_perm"] + 1) <= 0.05 / 4 / 5).all()
    assert perm_draws(24) == 2399 and perm_draws(384) == 38399


def test_bh_matches_statsmodels_and_keeps_nans():
    q = bh(np.array([0.01, np.nan, 0.04, 0.03]))
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2, 3]], [0.03, 0.04, 0.04])


def test_identical_embeddings_give_no_score_not_noise():
    rng = np.random.default_rng(0)
    n = 60
    same = np.arange(n) % 3 == 0
    table = pd.DataFrame({"model": "m", "seed": 0, "step": 0, "layer": np.repeat([0, 1], n),
                          "distance": np.concatenate([rng.normal(0, 1e-16, n),
                                                      0.5 - 0.2 * same + rng.normal(0, 0.05, n)]),
                          "same": np.tile(same, 2), "mean_relatedness": np.nan})
    perf = performance(table).set_index("layer")
    assert np.isnan(perf.loc[0, "r2"]) and perf.loc[1, "r2"] > 0.3
    assert best_layer(perf.reset_index())["best_layer"].item() == 1


def test_word_weights_draw_whole_words():
    words = np.array(["b", "a", "b", "c", "a", "a"])
    W = word_weights(words, 50, np.random.default_rng(3), observed=True)
    assert W.shape == (51, 6) and (W[0] == 1).all()
    assert (W[1:, 1] == W[1:, 4]).all() and (W[1:, 0] == W[1:, 2]).all()  # pairs of one word share its count
    assert (W[1:, [1, 0, 3]].sum(1) == 3).all()  # as many words drawn as there are
    counts = np.random.default_rng(3).multinomial(3, [1 / 3] * 3, size=50)  # one multinomial call, words sorted
    np.testing.assert_array_equal(W[1:, [1, 0, 3]], counts)


def test_weighted_scores_are_the_scores_of_the_resampled_sample():
    """Integer weights give what the sample with each pair repeated that often gives (np.corrcoef, :func:`auc`);
    unit weights give :func:`performance`'s AUC to the last bit."""
    rng = np.random.default_rng(4)
    d = np.round(rng.normal(size=(30, 3)), 1)  # rounded: many ties
    d[:, 0] = 0.5 + 1e-12 * rng.random(30)  # rounding noise: no r
    y = rng.uniform(0, 4, 30)
    pos = rng.random(30) < 0.5
    W = np.vstack([np.ones(30), rng.integers(0, 3, (5, 30))]).astype(float)
    r, r2, a = weighted_r(W, d, y), weighted_r(W, d, y, squared=True), weighted_auc(W, d, pos)
    assert np.isnan(r[:, 0]).all() and np.isnan(r2[:, 0]).all()
    for b, w in enumerate(W.astype(int)):
        for c in (1, 2):
            rep = np.repeat(d[:, c], w)
            assert r[b, c] == pytest.approx(np.corrcoef(rep, np.repeat(y, w))[0, 1], abs=1e-12)
            assert r2[b, c] == pytest.approx(r[b, c] ** 2, abs=1e-12)
        for c in range(3):
            assert a[b, c] == pytest.approx(auc(np.repeat(d[:, c], w), np.repeat(pos, w)), abs=1e-14)
    table = pd.DataFrame({"model": "m", "seed": 0, "step": 0, "layer": np.repeat([0, 1, 2], 30),
                          "distance": d.T.ravel(), "same": np.tile(~pos, 3), "mean_relatedness": np.tile(y, 3)})
    assert (a[0] == performance(table)["auc"].to_numpy()).all()
    d[3, 1] = np.nan
    one_class = np.zeros((1, 30))
    one_class[0, pos] = 1
    a = weighted_auc(np.vstack([W[:1], one_class]), d, pos)
    assert np.isnan(a[:, 1]).all() and np.isnan(a[1]).all() and np.isfinite(a[0, [0, 2]]).all()


def test_empirical_p_counts_the_observed_value_as_a_draw():
    null = np.array([0.1, 0.3, 0.5, 0.3 - 1e-13])
    assert empirical_p(null, 0.3) == 4 / 5  # 0.3, 0.5 and the rounding-noise 0.3 reach it
    assert empirical_p(null, 0.3, tol=0.0) == 3 / 5
    assert empirical_p(null, 0.6) == 1 / 5 and empirical_p(np.array([]), 0.6) == 1.0
    assert np.isnan(empirical_p(null, np.nan))  # not 1 / 5: an undefined statistic beats no draw


def test_bh_within_groups():
    df = pd.DataFrame({"g": ["a", "a", "b", "a", "b", None], "p": [0.01, 0.04, 0.02, np.nan, 0.5, 0.01]})
    q = bh_within(df, "p", "g")
    np.testing.assert_allclose(q[[0, 1]], bh(np.array([0.01, 0.04])))
    np.testing.assert_allclose(q[[2, 4]], bh(np.array([0.02, 0.5])))
    assert q[[3, 5]].isna().all()  # a missing p, a missing group key


def test_last_checkpoint_is_per_model_and_seed():
    """Two models share seed numbers but not their last step: each (model, seed) keeps its own last step."""
    df = pd.DataFrame({"model": ["a", "a", "b", "b", "b"], "seed": [0, 0, 0, 0, 1], "step": [8, 16, 4, 8, 4]})
    assert at_last_checkpoint(df).index.tolist() == [1, 3, 4]
    assert at_last_checkpoint(df.drop(columns="model")).index.tolist() == [1, 4]


def test_holm_rejects_what_statsmodels_holm_rejects():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for m in [1, 2, 3, 5, 8, 13] * 50:
        p = rng.uniform(0, 0.06, m) ** rng.uniform(0.5, 2)
        assert holm_rejects(p, 0.05) == int(multipletests(p, alpha=0.05, method="holm")[0].sum())
    assert holm_rejects(np.array([]), 0.05) == 0
    assert holm_rejects(np.array([0.01, 0.02, 0.04]), 0.05) == 3  # .01 <= .05/3, .02 <= .05/2, .04 <= .05/1
    assert holm_rejects(np.array([0.04, 0.01, 0.03]), 0.05) == 1  # .01 <= .05/3, then .03 > .05/2 stops it
    assert holm_rejects(np.array([0.02, 0.01]), 0.05) == 2  # order does not matter: .01 <= .025, .02 <= .05
