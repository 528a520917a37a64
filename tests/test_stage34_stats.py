"""Stage 3-4 statistics on synthetic tables with known answers; random head sets; the stage-4 design."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lexprobe.analysis.nulls import (
    REGRESSION_DRAWS,
    agreement,
    beats_null_after_onset,
    causal_map,
    drops,
    first_significant,
    null_tests,
    study_regression,
)
from lexprobe.analysis.robustness import head_robustness, paired_p, retained_performance
from lexprobe.engine.interventions import random_head_sets
from lexprobe.stages.ablation import LEAN, design
from lexprobe.stages.perturbation import summary

KEY = {"model": "m", "seed": 0}


def test_null_test_ranks_the_target_among_random_sets():
    best = pd.DataFrame([{**KEY, "step": 5, "condition": "intact", "r2": 0.5, "auc": 0.9},
                         {**KEY, "step": 5, "condition": "t", "r2": 0.2, "auc": 0.7}]
                        + [{**KEY, "step": 5, "condition": f"r{k}", "r2": 0.5 - 0.01 * k, "auc": 0.9}
                           for k in range(19)])
    des = pd.DataFrame([{**KEY, "condition": "t", "family": "zero", "role": "target"}]
                       + [{**KEY, "condition": f"r{k}", "family": "zero", "role": "random"} for k in range(19)])
    dr = drops(best)
    assert dr.set_index("condition").loc["t", "drop_r2"] == pytest.approx(0.3)
    t = null_tests(dr, des).iloc[0]
    assert t["n_random"] == 19 and t["p_rank"] == pytest.approx(1 / 20) == t["p_floor"]
    assert t["null_mean"] == pytest.approx(0.09) and t["z"] > 3
    # 19 sets cannot resolve alpha by rank (floor 0.05): the t prediction test can, and is the one reported
    assert t["method"] == "t prediction" and t["p"] < 0.001
    # a target no worse than the median random set is not significant
    best.loc[best["condition"] == "t", "r2"] = 0.41
    assert null_tests(drops(best), des).iloc[0]["p"] > 0.4
    # no intact score at the checkpoint: the target's drop is undefined, and so is its p (not 1 / 20)
    assert np.isnan(null_tests(drops(best[best["condition"] != "intact"]), des).iloc[0]["p"])


def _pairs(step: int, condition: str, signal: float, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for w in range(16):
        for k in range(6):
            same = k < 2
            for layer in (0, 1):
                d = 0.5 + (0.0 if same else signal) + rng.normal(0, 0.05) if layer == 1 else 0.3
                rows.append({**KEY, "step": step, "condition": condition, "layer": layer, "word": f"w{w}",
                             "pair_key": f"w{w}-{k}", "distance": d, "same": same, "mean_relatedness": np.nan})
    return pd.DataFrame(rows)


def test_causal_map_finds_the_head_that_destroys_the_signal():
    rng = np.random.default_rng(0)
    intact = _pairs(9, "intact", 0.2, rng)
    pairs = pd.concat([intact, _pairs(9, "kill", 0.0, rng), intact.assign(condition="keep")])  # keep: no effect
    des = pd.DataFrame([{"condition": "kill", "role": "single", "heads": ((1, 0),)},
                        {"condition": "keep", "role": "single", "heads": ((1, 1),)}])
    cmap = causal_map(pairs, des, n_boot=200).set_index("condition")
    assert cmap.loc["kill", "significant"] and cmap.loc["kill", "drop_r2"] > 0.3
    assert not cmap.loc["keep", "significant"]
    disc = pd.DataFrame([{**KEY, "layer": 1, "head": 0, "passes": True}, {**KEY, "layer": 1, "head": 1, "passes": True},
                         {**KEY, "layer": 0, "head": 0, "passes": False}])
    ag = agreement(cmap.reset_index(), disc).iloc[0]
    assert (ag["causal"], ag["discovered"], ag["both"]) == (1, 2, 1) and ag["jaccard"] == pytest.approx(0.5)
    assert ag["causal_heads"] == "L1H0"


def test_first_significant_step_needs_every_later_step():
    tests = pd.DataFrame({"family": "zero", **KEY, "step": [0, 1, 2, 4, 8], "p": [0.5, 0.01, 0.4, 0.01, 0.02]})
    assert first_significant(tests).iloc[0]["effect_from_step"] == 4
    tests["p"] = 0.5
    assert np.isnan(first_significant(tests).iloc[0]["effect_from_step"])


def test_head_robustness_separates_cue_from_position():
    rng = np.random.default_rng(1)
    intact, pert = [], []
    for s in range(30):
        for head, (cue, ctrl) in enumerate([(0.6, 0.1), (0.3, 0.3)]):  # head 0 follows the cue, head 1 the position
            row = {**KEY, "step": 3, "layer": 0, "head": head}
            intact.append({**row, "sentence_id": s, "cue_attn": 0.7 + rng.normal(0, 0.02)})
            pert.append({**row, "sentence_id": 100 + s, "source_id": s, "perturbation": "separate-x",
                         "operation": "separate", "cue_attn": cue + rng.normal(0, 0.02),
                         "control_attn": ctrl + rng.normal(0, 0.02)})
            pert.append({**row, "sentence_id": 200 + s, "source_id": s, "perturbation": "neutral",
                         "operation": "neutral", "cue_attn": (0.2 if head == 0 else 0.7) + rng.normal(0, 0.02),
                         "control_attn": np.nan})
    rob = head_robustness(pd.DataFrame(intact), pd.DataFrame(pert)).set_index(["perturbation", "head"])
    assert rob.loc[("separate-x", 0), "robust"] and not rob.loc[("separate-x", 1), "robust"]
    # the neutral word is a control, not a perturbation: its outcome is cue specificity, never robustness
    assert rob.loc[("neutral", 0), "cue_specific"] and not rob.loc[("neutral", 1), "cue_specific"]
    assert rob.loc["neutral", "robust"].isna().all() and (rob.loc["neutral", "role"] == "control").all()
    assert rob.loc["separate-x", "cue_specific"].isna().all()
    table = summary(rob.reset_index().assign(discovered=True))  # the stage's table: the control apart
    assert "robust:neutral" not in table and {"robust:separate-x", "control cue>neutral"} <= set(table.columns)
    assert rob.loc[("separate-x", 0), "retained"] == pytest.approx(0.6 / 0.7, abs=0.03)
    assert rob.loc[("neutral", 0), "test"] == "informative>neutral"


def test_paired_p_is_scipys_test_per_array_in_one_vectorised_call():
    """Arrays of one length tested together give, bit for bit, one scipy call per array; short, spreadless and
    non-finite cases fall back as documented."""
    rng = np.random.default_rng(3)
    diffs = [rng.normal(0.05 * i, 0.1, n) for i, n in enumerate([12, 12, 30, 12, 30, 7])]
    diffs[3][[2, 5]] = np.nan  # dropped: this one is tested with the 10 finite values alone
    one_by_one = [stats.ttest_1samp(d[np.isfinite(d)], 0.0, alternative="greater").pvalue for d in diffs]
    assert paired_p(diffs).tolist() == one_by_one
    assert paired_p([np.array([0.2]), np.array([0.25, 0.25, 0.25]), np.array([-0.5, -0.5]),
                     np.array([np.nan, np.nan])]).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_retained_performance_is_a_share_of_intact():
    best = pd.DataFrame([{**KEY, "step": 1, "perturbation": "intact", "r2": 0.4, "auc": 0.9},
                         {**KEY, "step": 1, "perturbation": "p", "r2": 0.1, "auc": 0.6}])
    assert retained_performance(best).iloc[0]["r2_retained"] == pytest.approx(0.25)


def test_retained_performance_subtracts_each_sets_untrained_baseline():
    """A set whose own words separate the senses (R^2 0.09 at step 0, as the organism's sense-specific frames
    did) keeps a share of the intact gain over baseline, not of the raw score."""
    rows = [(0, "intact", 0.005), (512, "intact", 0.405), (0, "frame", 0.09), (512, "frame", 0.29)]
    best = pd.DataFrame([{**KEY, "step": st, "perturbation": pe, "r2": r2, "auc": 0.5} for st, pe, r2 in rows])
    last = retained_performance(best).set_index("step").loc[512]
    assert last["r2_baseline"] == pytest.approx(0.09) and last["r2_intact_baseline"] == pytest.approx(0.005)
    assert last["r2_retained"] == pytest.approx(0.29 / 0.405)
    assert last["r2_retained_net"] == pytest.approx(0.2 / 0.4)


def test_a_perturbed_set_with_too_few_pairs_is_not_scored(stimuli):
    """On RAW-C, ``frame`` kept 3 of 504 pairs and reported an R^2 share of 521.9: such a set is not scored."""
    from lexprobe.stages.perturbation import measurable

    words = sorted(stimuli.pairs["word"].unique())
    sets = {"frame": stimuli.subset(words[:1], name="f"), "neutral": stimuli.subset(words[:20], name="n")}
    assert len(sets["frame"].pairs) == 6 and set(measurable(sets, stimuli)) == {"neutral"}


def test_every_stage_4_test_can_reach_its_threshold():
    """The smallest attainable p of each reported test sits below what its correction demands: head-set nulls by
    rank only where 1/(n+1) <= alpha/5 (else a t prediction test), the causal map by a normal approximation of
    the bootstrap, which can flag a lone head under BH over all its cells (a rank over 200 draws could not)."""
    from lexprobe.analysis.nulls import RANK_RESOLVES, rank_floor

    rng = np.random.default_rng(1)
    for n, method in ((10, "t prediction"), (19, "t prediction"), (100, "rank"), (1000, "rank")):
        best = pd.DataFrame([{**KEY, "step": 1, "condition": "intact", "r2": 0.5, "auc": 0.9},
                             {**KEY, "step": 1, "condition": "t", "r2": 0.1, "auc": 0.9}]
                            + [{**KEY, "step": 1, "condition": f"r{k}", "r2": 0.5 - rng.uniform(0, 0.05), "auc": 0.9}
                               for k in range(n)])
        des = pd.DataFrame([{**KEY, "condition": "t", "family": "zero", "role": "target"}]
                           + [{**KEY, "condition": f"r{k}", "family": "zero", "role": "random"} for k in range(n)])
        t = null_tests(drops(best), des).iloc[0]
        assert t["method"] == method and t["p"] < 0.05 / 5
        assert method != "rank" or t["p_floor"] == rank_floor(n) <= RANK_RESOLVES
    # the map: 4 checkpoints x 24 heads, two heads destroy the signal; BH over the 96 cells needs p <= 5.2e-4 for
    # the strongest, below a 200-draw rank's floor of 5.0e-3
    frames, design_rows = [], []
    for step in (1, 2, 4, 8):
        intact = _pairs(step, "intact", 0.2, rng)
        frames.append(intact)
        for head in range(24):
            cond = f"h{head}"
            frames.append(_pairs(step, cond, 0.0, rng) if head < 2 else intact.assign(condition=cond))
    design_rows = [{"condition": f"h{h}", "role": "single", "heads": ((0, h),)} for h in range(24)]
    cmap = causal_map(pd.concat(frames), pd.DataFrame(design_rows), n_boot=200)
    assert (cmap["fdr_family_size"] == 96).all() and cmap["p_rank"].min() == pytest.approx(1 / 201)
    assert set(cmap.loc[cmap["significant"], "head"]) == {0, 1}
    assert (cmap.loc[cmap["head"] < 2, "p"] < 0.05 / 96).all()


def test_random_head_sets():
    target = ((1, 0), (1, 2), (3, 1))
    sets = random_head_sets(4, 4, target, 3, 50, seed=3)
    assert all(len(s) == 3 and not set(s) & set(target) for s in sets)
    assert len(set(sets)) == 50 and sets == random_head_sets(4, 4, target, 3, 50, seed=3)
    assert len(set(random_head_sets(3, 2, ((0, 0),), 4, 100))) == 5  # only 5 sets of 4 exist: all of them
    matched = random_head_sets(4, 4, target, 3, 20, seed=3, layer_matched=True)
    assert all(sorted(l for l, _ in s) == [1, 1, 3] for s in matched)
    with pytest.raises(ValueError, match="cannot draw"):
        random_head_sets(2, 2, ((0, 0),), 4, 1)


def test_design_has_nulls_controls_and_the_single_head_map():
    stats = pd.DataFrame([{**KEY, "layer": l, "head": h, "passes": (l, h) in {(1, 0), (2, 3)}}
                          for l in range(3) for h in range(4)])
    plan = design(stats, n_layers=3, n_heads=4, n_random=7, n_random_dev=3)
    d = plan.table
    assert set(plan.conditions) == set(d["condition"]) and "intervention" not in d  # specs by name, no objects
    assert (d.query("family == 'single'").shape[0], d.query("role == 'control'").shape[0]) == (12, 1)
    assert d.query("family == 'edges' and role == 'random'").shape[0] == 7
    for m in ("zero", "mean", "resample", "knockout"):  # noqa: B007 (used by the queries' @m)
        assert d.query("family == @m and role == 'target'").iloc[0]["heads"] == ((1, 0), (2, 3))
        assert d.query("family == @m and role == 'random'").shape[0] == 7
    assert d.query("family == 'zero' and scope == 'all'").shape[0] == 1 + 3
    assert d["condition"].is_unique
    none = design(stats.assign(passes=False), n_layers=3, n_heads=4, n_random=7, n_random_dev=3).table
    assert set(none["family"]) == {"noop", "edges", "single"}


def test_each_seed_is_joined_to_its_own_design_rows_when_seeds_share_a_condition():
    """A condition is named by its head set, and one set can serve two seeds: in a 2 x 2 model whose seeds discover
    different heads, one seed's discovered head is the other's random set, and their random sets coincide (measured
    at every checkpoint for one seed, at the last for the other). Each seed's null tests and regression hold its
    own rows: its target, and checkpoints x (target + the random sets measured throughout)."""
    stats = pd.DataFrame([{**KEY, "seed": sd, "layer": la, "head": h, "passes": (la, h) == (0, sd)}
                          for sd in (0, 1) for la in range(2) for h in range(2)])
    plan = design(stats, n_layers=2, n_heads=2, n_random=3, n_random_dev=2, methods=("qk-zero",),
                  head_map=False).table
    sets = plan[plan["family"] == "qk-zero"]
    assert (sets.groupby("condition")[["seed", "role", "scope"]].nunique().max(axis=1) == 2).any()  # shared
    steps = (0, 1, 2, 4, 8, 16)
    rng = np.random.default_rng(0)
    dr = pd.DataFrame([{**KEY, "seed": r.seed, "condition": r.condition, "step": step,
                        "drop_r2": (0.05 + 0.01 * r.seed if r.role == "target" else 0.0) + rng.normal(0, 0.002)}
                       for r in sets.itertuples() for step in (steps if r.scope == "all" else steps[-1:])])
    last = null_tests(dr, plan).query("step == 16").set_index("seed")
    assert (last["n_random"] == 3).all()
    assert last["drop_r2"].to_numpy() == pytest.approx([0.05, 0.06], abs=0.01)  # each seed's own target
    reg = study_regression(dr, plan, ("qk-zero",), n_boot=200).set_index("seed")
    assert reg["n"].tolist() == [len(steps) * (1 + 2)] * 2 and reg["n_sets"].tolist() == [3, 3]
    assert reg["target_coef"].to_numpy() == pytest.approx([0.05, 0.06], abs=0.01)


def _set_drops(target: np.ndarray, random: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drops of a target set (``target``: one per checkpoint) and random sets (``random``: sets x checkpoints), with
    their design, measured at every checkpoint."""
    names = ["t", *(f"r{k}" for k in range(len(random)))]
    des = pd.DataFrame([{**KEY, "condition": c, "family": "qk-zero", "role": "target" if c == "t" else "random",
                         "scope": "all"} for c in names])
    values = np.vstack([target, random])
    dr = pd.DataFrame([{**KEY, "condition": c, "step": 2 ** j, "drop_r2": values[i, j]}
                       for i, c in enumerate(names) for j in range(values.shape[1])])
    return dr, des


def test_the_study_regression_respects_rows_that_share_a_checkpoint_or_a_set():
    """24 checkpoints x 11 sets are not 264 independent rows. A discovered set that beats every random set at every
    checkpoint reaches the bootstrap's floor 2/(draws + 1), well below 0.05; one checkpoint alone cannot carry the
    effect (resampled checkpoints), and a set inside the random sets' spread does not stand out at the set level,
    though OLS on the rows calls both significant."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.001, (11, 24))
    dr, des = _set_drops(0.1 + noise[0], noise[1:] + rng.normal(0, 0.005, (10, 1)))
    strong = study_regression(dr, des, ("qk-zero",)).iloc[0]
    assert strong["target_p"] == pytest.approx(2 / (REGRESSION_DRAWS + 1)) and strong["target_p"] < 0.05 / 20
    assert strong["target_low"] > 0.09 and strong["target_p_sets"] < 0.001
    spike = noise[0] + np.where(np.arange(24) == 12, 1.0, 0.0)  # one checkpoint, nothing at the other 23
    one = study_regression(*_set_drops(spike, noise[1:]), ("qk-zero",)).iloc[0]
    assert one["target_p_ols"] < 0.01 and one["target_p"] > 0.2 and one["target_low"] <= 0
    spread = rng.normal(0, 1, (10, 1))  # each random set's own persistent effect
    inside = study_regression(*_set_drops(spread.max() - 0.3 + 10 * noise[0], spread + 10 * noise[1:]),
                              ("qk-zero",)).iloc[0]
    assert inside["target_p_ols"] < 0.001 and inside["target_p_sets"] > 0.05


def test_checkpoints_beating_the_null_count_from_the_onset_with_holm():
    """Only checkpoints at or after the seed's stage-1 onset count, Holm-corrected across them; a rank test whose
    floor 1/(n + 1) cannot pass the corrected threshold says so; no onset, no count."""
    p = [0.001, 0.001, 0.001, 0.03, 0.04]  # steps 0 and 1 lie before the onset
    tests = pd.DataFrame([{"family": "qk-zero", **KEY, "step": st, "p": pv, "method": "t prediction",
                           "p_floor": 1 / 11} for st, pv in zip((0, 1, 64, 128, 256), p)])
    onsets = pd.DataFrame([{**KEY, "onset_step": 50.0}])
    r = beats_null_after_onset(tests, onsets).iloc[0]
    assert (r["checkpoints"], r["beats_null"], r["can_reject"]) == (3, 1, True)  # uncorrected: 3 of 3
    ranked = beats_null_after_onset(tests.assign(method="rank", p=1 / 11), onsets).iloc[0]
    assert (ranked["beats_null"], ranked["can_reject"]) == (0, False)
    none = beats_null_after_onset(tests, onsets.assign(onset_step=np.nan)).iloc[0]
    assert (none["checkpoints"], none["beats_null"], none["can_reject"]) == (0, 0, False)


def test_the_lean_default_design_measures_the_qk_edits_and_opt_ins_only_when_asked():
    """The default stage 4 (LEAN, no head map) ablates the discovered heads by the original study's QK edits against
    random sets at every checkpoint, with the no-op control; the edge controls come with ``knockout``, the
    single-head map with ``head_map``."""
    stats = pd.DataFrame([{**KEY, "layer": l, "head": h, "passes": (l, h) in {(1, 0), (2, 3)}}
                          for l in range(3) for h in range(4)])
    shape = {"n_layers": 3, "n_heads": 4, "n_random": 7, "n_random_dev": 3}
    lean = design(stats, **shape, methods=LEAN, source_step=1, head_map=False).table
    assert set(lean["family"]) == {"noop", "qk-zero", "qk-copy"}
    assert (lean.query("family != 'noop'")["scope"] == "all").sum() == 2 * (1 + 3)
    full = design(stats, **shape, methods=("knockout",), head_map=True).table
    assert set(full["family"]) == {"noop", "edges", "single", "knockout"}


@pytest.mark.parametrize("by", ["r2", "signed", "auc"])
def test_causal_map_bootstrap_picks_the_best_layer_by_the_study_rule(by):
    """At unit weights the map's best-layer R^2 is the R^2 of the layer the rule picks: a layer that separates the
    senses the wrong way (positive r) wins under r2 and loses under signed and auc."""
    from lexprobe.analysis.nulls import weighted_best_r2
    from lexprobe.analysis.performance import auc

    rng = np.random.default_rng(3)
    same = np.repeat([1.0, 0.0], 30)
    D = np.column_stack([same * 1.0 + rng.normal(0, 0.3, 60),      # wrong way: same-sense pairs farther
                         -same * 0.6 + rng.normal(0, 0.3, 60)])    # right way, weaker
    r = np.array([np.corrcoef(D[:, k], same)[0, 1] for k in range(2)])
    metric = {"r2": r**2, "signed": -np.sign(r) * r**2,
              "auc": np.array([auc(D[:, k], same == 0) for k in range(2)])}[by]
    got = weighted_best_r2(np.ones((1, 60)), D, same, by, different=same == 0)[0]
    assert got == pytest.approx(r[np.argmax(metric)] ** 2, abs=1e-12)
    assert np.argmax(metric) == (0 if by == "r2" else 1)
