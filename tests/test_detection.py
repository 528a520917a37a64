"""Head finding scored across development (lexprobe.analysis.detection) on hand-made tables: what each map should
name at each step, the lags, the readings and the selection-rule comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lexprobe.analysis import detection
from lexprobe.analysis.selection import MIN_STEPS, RULE_TITLES, discover, passing
from lexprobe.analysis.validity import per_head_check
from lexprobe.base.heads import head_name, heads_name, parse_head, parse_heads

CERTIFIED = pd.DataFrame({"model": "m", "seed": [0, 0], "layer": [1, 3], "head": [0, 2], "opens_step": [0, 256]})


def _map(rows: list[tuple[int, int, int, int, bool]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["seed", "step", "layer", "head", "significant"]).assign(model="m")


def test_head_names_are_written_and_read_back_by_one_owner():
    """Every table, view and report names a head L{layer}H{head} and a set by its heads in the given order."""
    assert head_name(1, 2) == "L1H2" and head_name(np.int64(10), np.int64(0)) == "L10H0"
    assert heads_name([(0, 2), (0, 1)]) == "L0H2 L0H1" and heads_name([]) == ""
    for heads in ((), ((0, 1),), ((3, 0), (0, 1), (12, 15))):
        assert parse_heads(heads_name(heads)) == heads
    assert parse_head("L12H3") == (12, 3)
    for bad in ("l1h2", "L1H", "L1H2 ", "H2L1"):
        with pytest.raises(ValueError, match="not a head name"):
            parse_head(bad)


def test_a_timed_head_is_expected_only_from_its_opening_step():
    found = _map([(0, 128, 1, 0, True), (0, 128, 3, 2, False), (0, 128, 0, 0, False),
                  (0, 512, 1, 0, True), (0, 512, 3, 2, True), (0, 512, 0, 0, True)])
    got = detection.scored({"map": found}, CERTIFIED).set_index("step")
    assert got.loc[128, "planted"] == 1 and got.loc[128, "true_positives"] == 1 and got.loc[128, "found"] == 1
    assert got.loc[512, ["planted", "found", "true_positives"]].tolist() == [2, 3, 2]
    assert got.loc[512, "found_heads"] == "L0H0 L1H0 L3H2"
    curves = detection.curves({"map": found}, CERTIFIED)
    pooled = curves[curves["seed"] == "all"].set_index("step")
    assert pooled.loc[128, "recall"] == 1.0 and pooled.loc[512, "precision"] == pytest.approx(2 / 3)
    last = detection.scored({"map": found}, CERTIFIED, last_only=True)
    assert last["step"].tolist() == [512]


def test_pooled_rows_sum_the_seeds_and_leave_precision_undefined_when_nothing_is_found():
    two = pd.concat([CERTIFIED, CERTIFIED.assign(seed=1)])
    found = _map([(0, 512, 1, 0, True), (0, 512, 3, 2, False), (1, 512, 1, 0, False), (1, 512, 3, 2, False)])
    got = detection.pooled(detection.scored({"map": found}, two), ["method", "model", "step"])
    per_seed = got[got["seed"] != "all"].set_index("seed")
    assert np.isnan(per_seed.loc[1, "precision"]) and per_seed.loc[1, "recall"] == 0
    total = got[got["seed"] == "all"].iloc[0]
    assert (total["planted"], total["found"], total["true_positives"], total["seeds"]) == (4, 1, 1, 2)
    assert total["recall"] == 0.25 and total["precision"] == 1.0


def test_a_head_is_a_carrier_from_the_first_step_it_stays_certified():
    per_head = pd.DataFrame({"model": "m", "seed": 0, "layer": 1, "head": 0, "step": [0, 64, 128, 256, 512],
                             "certified": [True, False, True, True, True]})
    per_head = pd.concat([per_head, per_head.assign(head=1, certified=[True, True, True, True, False])])
    got = detection.carrier_steps(per_head).set_index("head")
    assert got.loc[0, "carrier_step"] == 128 and got.loc[0, "certified_at"] == 4
    assert np.isnan(got.loc[1, "carrier_step"])  # not certified at the last checked step
    first = pd.DataFrame({"method": "map", "model": "m", "seed": 0, "layer": 1, "head": [0, 1],
                          "first_significant_step": [96.0, np.nan], "detected_from_step": [160.0, np.nan],
                          "opens_step": [64, 0]})
    lags = detection.lags(first, detection.carrier_steps(per_head)).set_index("head")
    assert lags.loc[0, "lag_steps"] == 96 and lags.loc[0, "lag_after_carrier"] == 32
    assert np.isnan(lags.loc[1, "lag_steps"])


def test_early_checkpoints_are_held_to_the_final_score():
    """Before the rise R^2 is noise: a step whose edges carry a large share of a tiny intact R^2 certifies nothing."""
    names = ("intact", "planted", "others", "all", "cut:L1H0", "alone:L1H0", "cut:L3H2", "alone:L3H2")
    early = (0.01, 0.0, 0.01, 0.0, 0.0, 0.01, 0.01, 0.0)  # the shares read "single", but of 1% of the final R^2
    late = (1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0)
    best = pd.DataFrame({"model": "m", "seed": 0, "step": np.repeat([8, 512], 8), "condition": names * 2,
                         "r2": early + late})
    got = per_head_check(best, CERTIFIED[["model", "seed", "layer", "head"]]).set_index(["step", "layer"])
    assert not got.loc[(8, 1), "certified"] and got.loc[(8, 1), "reading"] == "none"
    assert got.loc[(512, 1), "certified"] and got.loc[(512, 1), "reading"] == "single"


def test_readings_set_the_greedy_set_against_the_plant_and_what_was_learned():
    per_head = pd.DataFrame({"model": "m", "seed": [0, 0, 1, 1], "step": 512, "layer": [1, 3, 1, 3],
                             "head": [0, 2, 0, 2], "reading": ["OR", "OR", "single", "single"]})
    greedy = pd.DataFrame({"model": "m", "seed": [0, 0, 1], "step": [256, 512, 512], "set": ["L1H0", "L1H0 L3H2",
                                                                                            "L1H0"],
                           "size": [1, 2, 1], "reading": ["AND", "OR", "AND"]})
    got = detection.readings(per_head, greedy, "OR").set_index("seed")
    assert got.loc[0, "greedy_reading"] == "OR" and got.loc[0, "greedy_matches_planted"]
    assert got.loc[1, "greedy_reading"] == "single"  # a one-head set reads single, whatever its AND test says
    assert got.loc[1, "greedy_matches_learned"] and not got.loc[1, "learned_matches_planted"]
    joint = detection.readings(per_head, greedy, "joint")
    assert joint["greedy_matches_planted"].isna().all()  # a joint plant fixes no reading
    assert detection.planted_type({"n_heads": 1}) == "single" and detection.planted_type({"mode": "one"}) == "OR"
    assert detection.planted_type({"n_heads": 2, "mode": "all"}) == "joint"


def _units(recall_of: dict[str, float], n_seeds: int = 5, profiles: tuple[str, ...] = ("a", "b", "c")
           ) -> pd.DataFrame:
    """Per rule, profile and seed: two planted heads, found with the rule's recall (rounded per seed), no false
    head."""
    rows = []
    for rule, r in recall_of.items():
        for p in profiles:
            for sd in range(n_seeds):
                tp = int(round(2 * r)) if sd % 2 == 0 else int(2 * r)
                rows.append({"method": rule, "profile": p, "model": "m", "seed": sd, "planted": 2, "found": tp,
                             "true_positives": tp})
    return pd.DataFrame(rows)


def test_a_rule_that_finds_more_heads_is_chosen_and_confirmed():
    units = _units({"original rule": 1.0, "original + trend": 0.2, "original + prev-token": 0.2,
                    "original + both": 0.2})
    table, verdict = detection.choose_and_confirm(units)
    assert verdict.startswith("original rule beats the default") and "confirmed on the others" in verdict
    allrow = table[(table["split"] == "all")].set_index("rule")
    assert list(allrow.index) == list(RULE_TITLES.values())
    assert allrow.loc["original rule", "recall"] == 1.0 and allrow.loc["original + trend", "recall"] == 0.0
    assert allrow.loc["original rule", "f1_minus_default_low"] > 0
    assert allrow.loc["original + trend", "f1_minus_default"] == 0
    assert set(table["seeds"][table["split"] == "choose"].iloc[0].split()) == {"a:0,1", "b:0,1", "c:0,1"}


def test_a_rule_with_no_seeds_left_to_confirm_it_is_not_adopted():
    units = _units({"original rule": 1.0, "original + trend": 0.2, "original + prev-token": 0.2,
                    "original + both": 0.2})
    _, verdict = detection.choose_and_confirm(units, n_choose=5)
    assert "no seeds are left to confirm" in verdict and verdict.endswith("keep the default")
    with pytest.raises(ValueError, match="at least 1 seed per profile, not 0"):
        detection.choose_and_confirm(units, n_choose=0)


def test_equal_rules_keep_the_default():
    units = _units(dict.fromkeys(RULE_TITLES.values(), 0.5))
    table, verdict = detection.choose_and_confirm(units)
    assert verdict.startswith("keep the default")
    assert (table["f1_minus_default"] == 0).all()


def test_a_rule_better_only_on_the_choosing_seeds_is_not_confirmed():
    units = _units(dict.fromkeys(RULE_TITLES.values(), 0.5))
    better = (units["method"] == "original rule") & (units["seed"] < 2)
    units.loc[better, ["found", "true_positives"]] = 2
    table, verdict = detection.choose_and_confirm(units)
    assert "not confirmed" in verdict


def test_stage2_by_step_ends_with_stage_2_itself():
    rng = np.random.default_rng(0)
    steps = [0, 1, 2, 4, 8, 16, 32]
    perf = np.array([0.0, 0.0, 0.01, 0.05, 0.2, 0.5, 0.6])
    rows = []
    for i, s in enumerate(steps):
        for layer in range(2):
            for head in range(2):
                for sent in range(4):
                    cue = perf[i] * (layer == head) + rng.normal(0, 0.01)
                    rows.append({"model": "m", "seed": 0, "step": s, "layer": layer, "head": head, "sentence": sent,
                                 "cue_attn": cue, "prev_attn": 0.1 + rng.normal(0, 0.01), "entropy": 1.0})
    heads = pd.DataFrame(rows)
    best = pd.DataFrame({"model": "m", "seed": 0, "step": steps, "r2": perf})
    got = detection.stage2_by_step(heads, best, "r2", n_perm=50, seed=3)
    assert sorted(set(got["step"])) == steps[MIN_STEPS - 1:]
    full = discover(heads, best, "r2", n_perm=50, seed=3)
    pd.testing.assert_frame_equal(got[got["step"] == 32].drop(columns="step").reset_index(drop=True), full)
    reused = detection.stage2_by_step(heads, best, "r2", n_perm=50, seed=3, final=full.assign(rule="x"))
    pd.testing.assert_frame_equal(reused, got)  # stage 2's own statistics stand in for the last step
    maps = detection.rule_maps(got)
    assert (maps["original + both"]["significant"] <= maps["original rule"]["significant"]).all()


def test_the_detection_chart_draws_both_scores_and_the_opening_steps(tmp_path):
    from lexprobe.views import viz

    found = _map([(0, s, 1, 0, s >= 128) for s in (0, 64, 128, 256, 512)] + [(0, 512, 3, 2, True)])
    chart = viz.detection_chart(detection.curves({"map": found}, CERTIFIED), CERTIFIED)
    spec = chart.to_dict()
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in
             spec["spec"]["layer"]]
    assert marks == ["line", "rule"]  # a dashed rule at the late head's opening step (256)
    assert spec["datasets"][spec["spec"]["layer"][1]["data"]["name"]] == [{"x": 256}]
    assert viz.save(chart, tmp_path / "detection.svg").read_text().lstrip().startswith("<svg")


def test_validate_rules_runs_every_planted_smoke_profile(capsys, monkeypatch):
    """End to end on the planted smoke organisms (trained offline on first use): each is validated, its readings
    name its planted type, the method table covers 2 seeds of each, and both of protocol 3's decisions are
    printed; the decoy profile's decoys are checked and the pair tests ran."""
    from lexprobe.cli import main
    from lexprobe.organism.profiles import PLANTED_PROFILES
    from lexprobe.study import Study

    monkeypatch.setenv("LEXPROBE_SMOKE", "1")
    assert main(["validate", "--rules"]) == 0
    out = capsys.readouterr().out
    assert ("choose: seeds planted:0,1 planted-decoys:0,1 planted-handover:0,1 planted-or:0,1 planted-single:0,1 "
            "planted-staggered:0,1") in out
    assert out.count("original + prev-token") == 2  # the choose and all splits (smoke has no seeds to confirm on)
    decisions = out.rstrip().splitlines()[-2:]
    assert decisions[0].startswith("decision 1") and decisions[1].startswith("decision 2")
    types = {"planted": "joint", "planted-staggered": "joint", "planted-or": "OR", "planted-single": "single",
             "planted-decoys": "joint", "planted-handover": "OR"}
    for name in PLANTED_PROFILES:
        v = Study(suite=f"organism-{name}", progress=False).validation
        assert set(v.readings["planted_type"]) == {types[name]}
        assert set(v.curves["method"]) >= {"stage 2 passes", "original rule", "stage 4 necessity (noising)",
                                           "stage 2 + patching", "patching + pairs"}
        rules = v.methods[v.methods["method"].isin(detection.RULE_TITLES.values())]
        assert len(v.per_head["step"].unique()) > 1 and len(rules) == 4 * 2
        assert len(v.pairs) == 2 * 6  # the 6 pairs of the top 4 heads, per seed
        assert (len(v.decoys) > 0) == (name == "planted-decoys")


def test_the_study_picks_stage_2s_selection_rule():
    from lexprobe.study import Study

    stats = pd.DataFrame({"selected": [True, True, True, False], "diff_ok": [True, False, False, True],
                          "beats_prev": [True, True, False, True]})
    assert passing(stats).tolist() == [True, False, False, False]  # the default: the trend control
    assert passing(stats, "original").tolist() == [True, True, True, False]
    assert passing(stats, "prev").tolist() == [True, True, False, False]
    assert passing(stats, "both").tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="selection rule 'loose'"):
        passing(stats, "loose")
    with pytest.raises(ValueError, match="Study\\(selection='loose'\\)"):
        Study(suite="organism-smoke", selection="loose")
    assert Study(suite="organism-smoke").selection == "trend"


def test_stage_2_passes_the_heads_of_the_study_rule(monkeypatch):
    from lexprobe.study import Study

    monkeypatch.setenv("LEXPROBE_SMOKE", "1")
    default = Study(suite="organism-smoke", progress=False).discovery.stats
    loose = Study(suite="organism-smoke", selection="original", progress=False).discovery.stats
    assert (loose["passes"] == loose["selected"]).all() and set(loose["rule"]) == {"original rule"}
    assert (default["passes"] == (default["selected"] & default["diff_ok"])).all()
    assert set(default["rule"]) == {"original + trend"}
