"""Performance metrics, inflection detection and head discovery on data with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lexprobe.analysis.heads import bh, discover
from lexprobe.analysis.inflection import detect, grid_breakpoint, inflections, to_step
from lexprobe.analysis.performance import auc, best_layer, from_published, performance

STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 5000, 10000, 25000, 50000, 75000, 100000,
                  143000])


def broken_line(steps: np.ndarray, bp_step: float, rng: np.random.Generator, noise: float = 0.004) -> np.ndarray:
    x, psi = np.log10(steps + 1), np.log10(bp_step + 1)
    return 0.005 + 0.12 * np.clip(x - psi, 0, None) + rng.normal(0, noise, len(steps))


@pytest.mark.parametrize("bp", [300, 1500, 8000])
def test_segmented_recovers_known_breakpoint(bp):
    rng = np.random.default_rng(1)
    res = detect(STEPS, broken_line(STEPS, bp, rng))
    assert res["converged"]
    assert res["ci_low_step"] <= bp <= res["ci_high_step"]
    assert bp / 2 < res["breakpoint_step"] < bp * 2
    assert res["ci_high_step"] < bp * 4 and res["ci_low_step"] > bp / 4  # the CI is informative, not everything


def test_cross_checks_find_a_jump():
    score = np.where(STEPS >= 1000, 0.2, 0.005) + np.random.default_rng(0).normal(0, 0.002, len(STEPS))
    res = detect(STEPS, score)
    assert (res["max_increase_from"], res["max_increase_step"]) == (512, 1000)
    assert res["changepoint_step"] == 1000


def published_table(rng: np.random.Generator, steps: tuple[int, ...] = (0, 512, 1000)) -> pd.DataFrame:
    """A table in the original study's long format: 30 pairs x 3 layers x steps; from step 512 on, distance
    tracks relatedness more and more (linearly in log-step, so a broken line at ~256-512 describes it)."""
    rows = []
    for step in steps:
        for pair in range(30):
            same = pair % 3 == 0
            rel = rng.uniform(3, 4) if same else rng.uniform(0, 2)
            for layer in range(3):
                signal = 0.0 if step < 512 else 0.02 * layer + 0.03 * np.log2(step / 256)
                dist = 0.5 - signal * rel + rng.normal(0, 0.05)
                rows.append({"sentence1": f"s{pair}a", "sentence2": f"s{pair}b", "word": f"w{pair // 6}",
                             "string": f"w{pair // 6}", "Same_sense": "Same" if same else "Different",
                             "Distance": dist, "Layer": layer, "mean_relatedness": rel, "step": step})
    return pd.DataFrame(rows)


def test_published_format_r2_matches_independent_computation():
    raw = published_table(np.random.default_rng(3))
    perf = performance(from_published(raw))
    assert (perf["target"] == "relatedness").all()
    for (step, layer), g in raw.groupby(["step", "Layer"]):
        r, _ = stats.pearsonr(g["Distance"], g["mean_relatedness"])
        got = perf.query("step == @step and layer == @layer")["r2"].item()
        assert got == pytest.approx(r**2, abs=1e-12)
    best = best_layer(perf)
    assert list(best["step"]) == [0, 512, 1000]
    assert best.set_index("step").loc[1000, "best_layer"] == 2
    assert best.set_index("step").loc[1000, "r2"] > best.set_index("step").loc[0, "r2"]


def test_published_format_errors_name_the_problem():
    raw = published_table(np.random.default_rng(0)).drop(columns=["Layer"])
    with pytest.raises(ValueError, match=r"lacks columns \['Layer'\]"):
        from_published(raw)
    bad = published_table(np.random.default_rng(0))
    bad.loc[5, "Same_sense"] = "perhaps"
    with pytest.raises(ValueError, match="'perhaps'"):
        from_published(bad)


def test_auc_against_mann_whitney():
    rng = np.random.default_rng(0)
    s, pos = rng.normal(size=50), rng.random(50) < 0.4
    u = stats.mannwhitneyu(s[pos], s[~pos]).statistic
    assert auc(s, pos) == pytest.approx(u / (pos.sum() * (~pos).sum()))


def test_item_bootstrap_interval_brackets_the_estimate():
    raw = published_table(np.random.default_rng(5), steps=(0, 16, 64, 256, 512, 1000, 2000, 4000))
    pairs = from_published(raw)
    best = best_layer(performance(pairs))
    inf = inflections(best, pairs, n_boot=50)
    r = inf.iloc[0]
    assert r["boot_low_step"] <= r["boot_high_step"]
    full = to_step(grid_breakpoint(np.log10(best["step"].to_numpy() + 1.0), best["r2"].to_numpy()))
    assert 0 < r["boot_low_step"] <= full <= r["boot_high_step"] < 4000  # brackets the full-data estimate
    assert r["boot_high_step"] / r["boot_low_step"] < 20  # and says something: not the whole step range


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


def test_bh_matches_statsmodels_and_keeps_nans():
    q = bh(np.array([0.01, np.nan, 0.04, 0.03]))
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2, 3]], [0.03, 0.04, 0.04])


def test_identical_embeddings_give_no_score_not_noise():
    rng = np.random.default_rng(0)
    n = 60
    same = np.arange(n) % 3 == 0
    table = pd.DataFrame({"model": "m", "seed": 0, "step": 0, "layer": np.repeat([0, 1], n),
                          "distance": np.concatenate([rng.normal(0, 1e-16, n), 0.5 - 0.2 * same + rng.normal(0, 0.05, n)]),
                          "same": np.tile(same, 2), "mean_relatedness": np.nan})
    perf = performance(table).set_index("layer")
    assert np.isnan(perf.loc[0, "r2"]) and perf.loc[1, "r2"] > 0.3
    assert best_layer(perf.reset_index())["best_layer"].item() == 1
