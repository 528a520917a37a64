"""Inflection detection on synthetic curves with known onsets: the three shapes, realistic Pythia-like curves on the
study's 16-step grid and on all 154 Pythia steps, degenerate curves, and the cross-checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lexprobe.analysis.curves import MODELS, detect, fit, fitted_curves, inflections, to_step
from lexprobe.analysis.synthetic import ONSET_WINDOW, PUBLISHED_MEAN, STUDY_STEPS, mean_curve, pythia_curve
from lexprobe.checkpoints.suites import PYTHIA_STEPS, RIVTROTT_STEPS

GRIDS = {"study16": STUDY_STEPS, "rivtrott20": RIVTROTT_STEPS, "pythia154": PYTHIA_STEPS}


def log1(steps) -> np.ndarray:
    return np.log10(np.asarray(steps, float) + 1)


def within(value: float, truth: float, factor: float) -> bool:
    return truth / factor <= value <= truth * factor


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("onset", [64, 3000])
def test_flat_then_rise(grid, onset):
    steps = np.asarray(GRIDS[grid], float)
    y = 0.01 + 0.1 * np.clip(log1(steps) - log1(onset), 0, None)
    y = y + np.random.default_rng(onset).normal(0, 0.005, len(steps))
    r = detect(steps, y)
    assert r["shape"] == "flat->rise" and r["saturation_censored"] and np.isnan(r["midpoint_step"])
    assert within(r["onset_step"], onset, 1.6)
    assert r["onset_low_step"] <= onset <= r["onset_high_step"]


@pytest.mark.parametrize("grid", GRIDS)
def test_flat_rise_plateau(grid):
    steps = np.asarray(GRIDS[grid], float)
    y = 0.01 + 0.1 * (np.clip(log1(steps), log1(200), log1(20000)) - log1(200))
    y = y + np.random.default_rng(1).normal(0, 0.01, len(steps))
    r = detect(steps, y)
    assert r["shape"] == "flat->rise->plateau" and not r["onset_censored"] and not r["saturation_censored"]
    assert within(r["onset_step"], 200, 1.7) and r["onset_low_step"] <= 200 <= r["onset_high_step"]
    assert within(r["saturation_step"], 20000, 2) and r["saturation_low_step"] <= 20000 <= r["saturation_high_step"]
    assert within(r["midpoint_step"], 2000, 2)  # centre of the rise in log-step


@pytest.mark.parametrize("grid", GRIDS)
def test_rise_then_plateau(grid):
    """Rising from the first checkpoint (true onset: step 0) to a plateau from step 3000."""
    steps = np.asarray(GRIDS[grid], float)
    y = 0.01 + 0.1 * np.clip(log1(steps), None, log1(3000)) + np.random.default_rng(2).normal(0, 0.01, len(steps))
    r = detect(steps, y)
    assert r["onset_step"] <= 8 and r["onset_low_step"] == 0  # at or near the first checkpoint, interval from it
    assert within(r["saturation_step"], 3000, 2) and not r["saturation_censored"]


def test_logistic_curve_is_recovered_exactly():
    steps = np.asarray(PYTHIA_STEPS, float)
    lo, hi = log1(300), log1(30000)
    y = 0.01 + 0.3 / (1 + np.exp(-(log1(steps) - (lo + hi) / 2) / ((hi - lo) / (2 * np.log(9)))))
    r = detect(steps, y)
    assert r["curve_model"] == "logistic"
    assert r["onset_step"] == pytest.approx(300, rel=1e-3) and r["saturation_step"] == pytest.approx(30000, rel=1e-3)
    assert r["midpoint_step"] == pytest.approx(to_step((lo + hi) / 2), rel=1e-3)


@pytest.mark.parametrize("model", list(PUBLISHED_MEAN))
def test_realistic_curves_on_the_study_grid(model):
    """Published mean curve + published seed-to-seed noise: the onset lands at the 512 -> 1000 rise, not in the
    flat part (benchmarks/inflection_acceptance.py measures the rates on 200 draws)."""
    steps = np.asarray(STUDY_STEPS, float)
    rows = [detect(steps, y) for y in pythia_curve(model, steps, np.random.default_rng(4), n=40)]
    onset = np.array([r["onset_step"] for r in rows])
    assert np.mean((onset >= 256) & (onset <= 2000)) >= 0.85
    assert 256 <= np.median(onset) <= 1000
    lo, hi = np.array([r["onset_low_step"] for r in rows]), np.array([r["onset_high_step"] for r in rows])
    assert np.mean((lo <= ONSET_WINDOW[1]) & (hi >= ONSET_WINDOW[0])) >= 0.6
    assert {r["shape"] for r in rows} <= {"flat->rise->plateau", "flat->rise", "rise"}


def test_one_broken_line_lands_in_the_flat_part_but_the_chosen_model_does_not():
    steps = np.asarray(STUDY_STEPS, float)
    for model in PUBLISHED_MEAN:
        y = mean_curve(model, steps)
        assert to_step(fit("segmented1", log1(steps), y).theta[0]) < 256  # the old estimate: flat part
        r = detect(steps, y)
        assert ONSET_WINDOW[0] / 1.5 <= r["onset_step"] <= ONSET_WINDOW[1]
        assert r["shape"].startswith("flat->rise")


def test_realistic_410m_curve_on_all_pythia_steps():
    steps = np.asarray(PYTHIA_STEPS, float)
    onset = np.array([detect(steps, y)["onset_step"]
                      for y in pythia_curve("pythia-410m", steps, np.random.default_rng(5), n=15)])
    assert np.mean((onset >= 256) & (onset <= 2000)) >= 0.9


@pytest.mark.xfail(strict=True, reason="measured: 30-50% of draws in 256-2000 (onsets at ~100-600): the 14m rise "
                   "(0.007 -> 0.062 from step 512 to 1000, noise 0.03 after) has no checkpoint inside it, and 143 "
                   "dense late checkpoints dominate the fit; see benchmarks/inflection_acceptance.py")
def test_realistic_14m_curve_on_all_pythia_steps():
    steps = np.asarray(PYTHIA_STEPS, float)
    onset = np.array([detect(steps, y)["onset_step"]
                      for y in pythia_curve("pythia-14m", steps, np.random.default_rng(5), n=15)])
    assert np.mean((onset >= 256) & (onset <= 2000)) >= 0.9


def test_model_choice_reports_every_criterion():
    steps = np.asarray(STUDY_STEPS, float)
    r = detect(steps, pythia_curve("pythia-410m", steps, np.random.default_rng(6)))
    crit = {m: r[f"aicc_{m}"] for m in MODELS}
    assert r["selected_by"] == "AICc" and np.isnan(crit["segmented3"])  # 16 checkpoints: too few for 8 parameters
    compared = {m: c for m, c in crit.items() if np.isfinite(c)}
    assert set(compared) == {"flat", "linear", "segmented1", "segmented2", "logistic"}
    assert r["curve_model"] == min(compared, key=compared.get)


def test_intervals_contain_their_estimates():
    steps = np.asarray(STUDY_STEPS, float)
    for y in pythia_curve("pythia-14m", steps, np.random.default_rng(7), n=10):
        r = detect(steps, y)
        for k in ("onset", "midpoint", "saturation"):
            if np.isfinite(r[f"{k}_step"]):
                assert r[f"{k}_low_step"] <= r[f"{k}_step"] <= r[f"{k}_high_step"]


def test_degenerate_and_short_curves_fall_back():
    steps = np.asarray(STUDY_STEPS, float)
    flat = detect(steps, np.full(len(steps), 0.02))
    assert flat["curve_model"] == "flat" and np.isnan(flat["onset_step"]) and flat["shape"] == "flat"
    noise = [detect(steps, y)["curve_model"] for y in np.random.default_rng(8).normal(0.01, 0.003, (30, len(steps)))]
    assert np.mean([m in ("flat", "linear") for m in noise]) >= 0.8
    few = detect(steps[[0, 4, 8, 10, 11, 13]], np.array([0.0, 0.0, 0.01, 0.1, 0.2, 0.3]))
    assert few["curve_model"] == "segmented1" and "too few" in few["selected_by"]
    assert all(np.isnan(few[f"aicc_{m}"]) for m in MODELS)
    three = detect(np.array([0, 10, 100]), np.array([0.0, 0.2, 0.3]))
    assert three["curve_model"] is None and np.isnan(three["onset_step"]) and three["shape"] == "flat"
    assert three["max_increase_step"] == 10  # 0.2 per 1.04 decades beats 0.1 per 0.96
    with_nan = detect(steps, np.where(steps == 64, np.nan, mean_curve("pythia-410m", steps)))
    assert with_nan["n_checkpoints"] == len(steps) - 1
    with pytest.raises(ValueError, match=">= 2 checkpoints"):
        detect(np.array([0.0, 5.0]), np.array([0.1, np.nan]))


def test_largest_increase_is_per_decade_of_log_step():
    steps = np.asarray(STUDY_STEPS, float)
    y = mean_curve("pythia-14m", steps)
    r = detect(steps, y)
    assert (r["max_increase_from"], r["max_increase_step"]) == (512, 1000)
    assert r["max_increase_per_decade"] == pytest.approx((0.062 - 0.007) / (log1(1000) - log1(512)))
    raw = int(np.argmax(np.diff(y))) + 1
    assert (steps[raw - 1], steps[raw]) == (1000, 10000)  # raw differences favour the long gap


def test_changepoint_cross_check():
    steps = np.asarray(RIVTROTT_STEPS, float)
    y = np.where(steps >= 1000, 0.2, 0.005) + np.random.default_rng(0).normal(0, 0.002, len(steps))
    assert detect(steps, y)["changepoint_step"] == 1000


def test_fitted_curves_follow_the_data():
    steps = np.asarray(STUDY_STEPS, float)
    best = pd.concat([pd.DataFrame({"model": "m", "seed": s, "step": steps,
                                    "r2": pythia_curve("pythia-410m", steps, np.random.default_rng(s))})
                      for s in (0, 1)])
    fitted = fitted_curves(best)
    inf = inflections(best)
    assert set(fitted["seed"]) == {0, 1} and set(fitted["curve_model"]) <= set(inf["curve_model"])
    for seed, g in fitted.groupby("seed"):
        data = best[best["seed"] == seed]
        at = np.interp(log1(data["step"]), log1(g["step"]), g["fitted"])
        assert np.sqrt(np.mean((at - data["r2"]) ** 2)) < 0.03  # within the noise


def test_a_zero_width_profile_interval_is_reported_as_a_failure_with_its_reason():
    from lexprobe.report.inflection_report import _interval

    assert _interval(176.4, 176.4).startswith("FAILED (zero width at 176")
    assert "grid is coarser than the interval" in _interval(176.4, 176.4)
    assert _interval(150.2, 300.0) == "[150, 300]" and _interval(float("nan"), float("nan")) == "none"
