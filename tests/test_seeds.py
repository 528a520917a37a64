"""Stage 5 statistics on constructed tables whose answers can be checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lexprobe.analysis import agreement as seeds

LAYERS, HEADS = 6, 8


def head_stats(sets: list[set[tuple[int, int]]]) -> pd.DataFrame:
    """Head-discovery stats with one row per (seed, layer, head); ``passes`` for the heads in each seed's set."""
    return pd.DataFrame([{"model": "m", "seed": s, "layer": layer, "head": head, "passes": (layer, head) in hs}
                         for s, hs in enumerate(sets) for layer in range(LAYERS) for head in range(HEADS)])


def test_jaccard_by_hand():
    sets = head_stats([{(2, 0), (2, 1)}, {(2, 1), (3, 0)}, set()])
    pairs = seeds.pairwise_jaccard(sets).set_index(["seed_a", "seed_b"])
    assert pairs.loc[(0, 1), "jaccard"] == pytest.approx(1 / 3)  # {a, b} vs {b, c}: 1 shared of 3
    assert pairs.loc[(0, 2), "jaccard"] == 0 and pairs.loc[(0, 2), "union"] == 2
    _, mask = seeds.head_masks(sets)
    assert float(seeds.mean_jaccard(mask.reshape(3, -1))) == pytest.approx((1 / 3 + 0 + 0) / 3)
    # two empty sets have no Jaccard: that pair is left out of the mean
    _, empty = seeds.head_masks(head_stats([{(0, 0)}, set(), set()]))
    assert float(seeds.mean_jaccard(empty.reshape(3, -1))) == 0.0
    assert np.isnan(seeds.mean_jaccard(np.zeros((2, 5), bool)))


def test_identical_head_sets_beat_both_nulls():
    out = seeds.head_agreement(head_stats([{(2, 0), (2, 1)}] * 5), n_perm=999).iloc[0]
    assert out["jaccard"] == 1.0 and out["layer_jaccard"] == 1.0
    # by chance all five seeds pick the same 2 of layer 2's 8 heads with probability (1/28)^4
    assert out["p_within_layer"] == pytest.approx(1 / 1000)
    assert out["p_anywhere"] == pytest.approx(1 / 1000)
    assert out["null_within_layer_mean"] < 0.3 and out["null_anywhere_mean"] < 0.1


def test_sets_sharing_only_layers_agree_on_layers_not_heads():
    disjoint_in_layer_2 = [{(2, 0), (2, 1)}, {(2, 2), (2, 3)}, {(2, 4), (2, 5)}, {(2, 6), (2, 7)}]
    out = seeds.head_agreement(head_stats(disjoint_in_layer_2), n_perm=999).iloc[0]
    assert out["jaccard"] == 0.0
    assert out["p_within_layer"] == 1.0 and out["p_anywhere"] == 1.0  # not significant by identity
    assert out["layer_jaccard"] == 1.0 and out["p_layer"] < 0.01  # but the same layer in every seed
    assert out["heads_per_seed"] == "2,2,2,2"


def test_within_layer_null_keeps_each_seeds_heads_per_layer():
    rng = np.random.default_rng(0)
    _, mask = seeds.head_masks(head_stats([{(0, 1), (2, 0), (2, 5)}, {(5, 7)}]))
    shuffled = rng.permuted(np.broadcast_to(mask, (50, *mask.shape)), axis=3)
    assert (shuffled.sum(-1) == mask.sum(-1)).all()
    assert not (shuffled == mask).all()


def test_seed_counts_per_head():
    counts = seeds.seed_counts(head_stats([{(2, 0), (2, 1)}, {(2, 0)}, {(2, 0), (5, 3)}]))
    assert len(counts) == LAYERS * HEADS and (counts["n_seeds"] == 3).all()
    got = counts[counts["n_seeds_selecting"] > 0].set_index(["layer", "head"])
    assert got["n_seeds_selecting"].to_dict() == {(2, 0): 3, (2, 1): 1, (5, 3): 1}
    assert got.loc[(2, 1), "seeds"] == "0" and got.loc[(2, 0), "seeds"] == "0 1 2"


def onset_table(x: list[float], se: list[float]) -> pd.DataFrame:
    """An inflection table whose onsets lie at log10(step + 1) = x with bootstrap intervals x +- 1.96 se."""
    x, se = np.array(x, float), np.array(se, float)
    step = lambda v: 10**v - 1  # noqa: E731
    return pd.DataFrame({"model": "m", "seed": range(len(x)), "curve_model": "segmented2", "shape": "flat->rise",
                         "onset_step": step(x), "onset_low_step": np.nan, "onset_high_step": np.nan,
                         "onset_boot_low_step": step(x - seeds.Z95 * se),
                         "onset_boot_high_step": step(x + seeds.Z95 * se)})


def test_written_out_z95_is_scipys_normal_quantile():
    assert seeds.Z95 == float(stats.norm.ppf(0.975))


def test_seed_spread_and_heterogeneity_by_hand():
    per, spread = seeds.inflection_agreement(onset_table([1.0, 3.0], [0.5, 0.5]))
    assert per["log10_onset"].tolist() == pytest.approx([1.0, 3.0])
    assert per["se_log10"].tolist() == pytest.approx([0.5, 0.5])
    r = spread.iloc[0]
    # Q = ((1 - 2)^2 + (3 - 2)^2) / 0.5^2 = 8 on 1 df
    assert r["Q"] == pytest.approx(8.0) and r["df"] == 1 and r["p"] == pytest.approx(stats.chi2.sf(8, 1))
    assert r["I2"] == pytest.approx(7 / 8) and r["range_log10"] == pytest.approx(2.0)
    assert r["sd_log10"] == pytest.approx(np.sqrt(2))
    assert r["min_onset_step"] == pytest.approx(9) and r["max_onset_step"] == pytest.approx(999)


def test_seeds_within_their_intervals_are_not_heterogeneous():
    _, spread = seeds.inflection_agreement(onset_table([2.0, 2.1, 1.9, 2.05], [0.3] * 4))
    assert spread.iloc[0]["p"] > 0.5 and spread.iloc[0]["I2"] == 0.0


def test_seed_without_onset_is_left_out_of_the_test():
    t = onset_table([1.0, 3.0, 2.0], [0.5, 0.5, 0.5])
    t.loc[2, ["onset_step", "onset_boot_low_step", "onset_boot_high_step"]] = np.nan
    _, spread = seeds.inflection_agreement(t)
    assert spread.iloc[0][["n_seeds", "n_with_onset", "n_tested"]].tolist() == [3, 2, 2]
    assert spread.iloc[0]["Q"] == pytest.approx(8.0)
    with pytest.raises(ValueError, match="interval must be one of"):
        seeds.inflection_agreement(t, interval="jackknife")


def test_mixed_model_recovers_fixed_effects_and_seed_variance():
    """Piecewise curves in log-step bent at step 64, seed-specific intercept and post-inflection slope."""
    rng = np.random.default_rng(3)
    steps = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000, 8000])
    c = np.log10(65)
    truth = {"score at the inflection": 0.10, "slope before (per decade)": 0.01, "change of slope after": 0.30}
    rows = []
    for sd in range(12):
        b0 = truth["score at the inflection"] + rng.normal(0, 0.02)
        b2 = truth["change of slope after"] + rng.normal(0, 0.05)
        x = np.log10(steps + 1)
        y = b0 + truth["slope before (per decade)"] * (x - c) + b2 * np.maximum(x - c, 0) + rng.normal(0, 0.01, len(x))
        rows.append(pd.DataFrame({"model": "m", "seed": sd, "step": steps, "r2": y}))
    best = pd.concat(rows, ignore_index=True)
    inflection = pd.DataFrame({"model": "m", "seed": range(12), "onset_step": 64.0})
    fit = seeds.mixed_model(best, inflection)
    info = fit.info.iloc[0]
    assert info["breakpoint_step"] == pytest.approx(64) and info["converged"]
    assert info["random_effects"] == "intercept + post slope"
    fixed = fit.fixed.set_index("term")
    for term, value in truth.items():
        assert fixed.loc[term, "ci_low"] < value < fixed.loc[term, "ci_high"], term
    assert fixed.loc["change of slope after", "estimate"] == pytest.approx(0.30, abs=0.05)
    after = fixed.loc["slope after (pre + post)"]
    assert after["estimate"] == pytest.approx(fixed.loc["slope before (per decade)", "estimate"]
                                              + fixed.loc["change of slope after", "estimate"])
    var = fit.variance.set_index("component")["value"]
    assert 0.05**2 / 4 < var["seed: post-slope variance"] < 0.05**2 * 4  # true 0.0025
    assert var["residual variance"] == pytest.approx(0.01**2, rel=0.5)


def test_mixed_model_breakpoint_falls_back_when_no_onset_is_inside():
    steps = np.array([0, 4, 16, 64, 256])
    best = pd.DataFrame({"model": "m", "seed": np.repeat([0, 1, 2], 5), "step": np.tile(steps, 3),
                         "r2": np.random.default_rng(0).normal(0.1, 0.01, 15)})
    c, source = seeds.breakpoint_of(pd.DataFrame({"onset_step": [0.0, np.nan]}), best)
    assert c == pytest.approx(np.log10(257) / 2) and source.startswith("middle")
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seeds.mixed_model(best[best["seed"] == 0], pd.DataFrame({"model": ["m"], "seed": [0], "onset_step": [16.0]}))


def test_causal_agreement_takes_each_seeds_last_checkpoint():
    tests = pd.DataFrame({"family": "zero", "model": "m", "seed": [0, 0, 1, 1, 2], "step": [8, 16, 8, 16, 16],
                          "drop_r2": [0.0, 0.2, 0.0, 0.1, 0.01], "null_mean": 0.0, "null_q95": 0.02,
                          "n_random": 99, "p": [0.5, 0.01, 0.6, 0.02, 0.4], "z": 1.0})
    per, summary = seeds.causal_agreement(tests)
    assert per["step"].tolist() == [16, 16, 16] and per["p"].tolist() == [0.01, 0.02, 0.4]
    s = summary.iloc[0]
    assert s["n_significant"] == 2 and s["mean_drop"] == pytest.approx(0.31 / 3)
    assert s["fisher_p"] == pytest.approx(stats.combine_pvalues([0.01, 0.02, 0.4], method="fisher").pvalue)
    assert s["min_attainable_p"] == pytest.approx(0.01)
