"""The command line (extract, errors) and charts (build and export offline)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_model

from lexprobe.cli import main
from lexprobe.store.results import load_results
from lexprobe.views import viz


@pytest.fixture()
def local_suite(tmp_path, tokenizer):
    for step in (0, 4):
        tiny_model(len(tokenizer), seed=step).save_pretrained(tmp_path / "suite" / f"step{step}")
        tokenizer.save_pretrained(tmp_path / "suite" / f"step{step}")
    return tmp_path / "suite"


def test_cli_extract_then_cached(local_suite, tmp_path, capsys):
    args = ["extract", "--suite", f"local:{local_suite}", "--out", str(tmp_path / "res"), "--no-embeddings"]
    assert main(args) == 0
    assert "{'measured': 2}" in capsys.readouterr().out
    assert main(args) == 0
    assert "{'cached': 2}" in capsys.readouterr().out
    df = load_results("heads", root=tmp_path / "res")
    assert sorted(df["step"].unique()) == [0, 4]
    with pytest.raises(FileNotFoundError):
        load_results("embeddings", root=tmp_path / "res")


@pytest.mark.parametrize("args,message", [
    (["extract", "--suite", "gpt-17"], "unknown suite 'gpt-17'"),
    (["extract", "--suite", "local:/nonexistent/x"], "does not exist"),
    (["extract", "--suite", "pythia-14m", "--steps", "3"], r"steps \[3\] are not in this suite"),
    (["extract", "--suite", "pythia-14m", "--stimuli", "nosuchset"], "no shipped stimulus set named 'nosuchset'"),
])
def test_cli_errors_name_the_bad_argument(args, message, capsys):
    assert main(args) == 2
    assert re.search(message, capsys.readouterr().err)


def test_charts_build_and_export_offline(tmp_path):
    steps = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
    best = pd.DataFrame({"model": "m", "seed": 0, "step": steps, "r2": np.linspace(0, 0.4, len(steps)),
                         "best_layer": 3})
    inf = pd.DataFrame({"model": ["m"], "seed": [0], "curve_model": ["segmented2"], "shape": ["flat->rise"],
                        "onset_step": [100.0], "onset_low_step": [60.0], "onset_high_step": [150.0]})
    fitted = pd.DataFrame({"model": "m", "seed": 0, "step": [0.0, 100.0, 512.0], "fitted": [0.0, 0.0, 0.4],
                           "curve_model": "segmented2"})
    chart = viz.performance_chart(best, inf, onset=64, fitted=fitted)
    spec = chart.to_dict()
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert marks.count("rect") == 1 and marks.count("rule") == 2 and marks.count("line") == 2  # CI, onsets, fit
    out = viz.save(chart, tmp_path / "perf.svg")
    assert out.read_text().lstrip().startswith("<svg")
    stats = pd.DataFrame({"model": "m", "seed": 0, "layer": [0, 0, 1, 1], "head": [0, 1, 0, 1],
                          "r": [0.1, -0.2, 0.9, 0.0], "q": [0.5, 0.5, 0.01, 0.9], "q_logstep": 0.5,
                          "q_diff": [0.5, 0.6, 0.02, 0.9],
                          "q_prev": 0.5, "passes": [False, False, True, False]})
    traj = pd.DataFrame([{"model": "m", "seed": 0, "step": s, "layer": l, "head": h, "cue_attn": 0.1,
                          "prev_attn": 0.2, "entropy": 1.0} for s in steps for l in (0, 1) for h in (0, 1)])
    explorer = viz.head_explorer(stats, traj).to_dict()
    assert json.dumps(explorer).count('"layer": 1, "head": 0') >= 1  # best head preselected
    viz.save(viz.head_explorer(stats, traj), tmp_path / "heads.html")
    assert "vega" in (tmp_path / "heads.html").read_text()
    bars = viz.attention_tokens(["The", "\u0120muddy", "\u0120bank"], [0.2, 0.7, 0.1], [2], [1]).to_dict()
    assert [r["role"] for r in bars["datasets"][next(iter(bars["datasets"]))]] == ["other", "cue", "target"]


def test_every_chart_of_several_series_has_a_legend_and_the_check_sees_a_missing_one():
    """The legend check reads the chart as Vega-Lite compiles it: a translucent band's ``legend: null`` cancels the
    lines' legend (the bug of stage 1's and stage 4's charts), and the check says so; the charts with layers under
    their series lines keep one legend; one series needs none."""
    import altair as alt

    steps = (0, 8, 64)
    best = pd.DataFrame([{"model": "m", "seed": sd, "step": st, "r2": 0.1 * sd + 0.001 * st, "best_layer": 2}
                         for sd in range(3) for st in steps])
    inf = pd.DataFrame({"model": "m", "seed": range(3), "curve_model": "segmented2", "shape": "flat->rise",
                        "onset_step": 8.0, "onset_low_step": 4.0, "onset_high_step": 16.0})
    fitted = best.assign(fitted=best["r2"], curve_model="segmented2")
    tests = pd.DataFrame([{"family": "qk-copy", "seed": sd, "step": st, "drop_r2": 0.01 * sd, "null_q05": 0.0,
                           "null_q95": 0.02, "null_mean": 0.01, "p": 0.5, "n_random": 10}
                          for sd in range(3) for st in steps])
    for chart in (viz.performance_chart(best, inf, onset=8, fitted=fitted), viz.ablation_chart(tests, "qk-copy")):
        assert viz.colour_legends(viz.spec_of(chart)) == [("color", 3, True)]
        assert viz.legend_problems(chart) == []
    two = pd.DataFrame({"x": [0, 1, 0, 1], "s": ["a", "a", "b", "b"]})
    band = alt.Chart(two).mark_area(opacity=0.2).encode(x="x:Q", y="x:Q", color=alt.Color("s:N", legend=None))
    line = alt.Chart(two).mark_line().encode(x="x:Q", y="x:Q", color="s:N")
    assert viz.legend_problems(alt.layer(band, line)) == ["colour scale 'color' maps 2 values and has no legend"]
    assert viz.legend_problems(alt.layer(line, band)) == viz.legend_problems(alt.layer(band, line))  # in any order
    assert viz.legend_problems(alt.Chart(two[two["s"] == "a"]).mark_line().encode(
        x="x:Q", y="x:Q", color=alt.Color("s:N", legend=None))) == []  # one series needs no legend


def test_head_maps_carry_only_the_columns_they_draw():
    """A patch or causal map chart embeds what it draws (seed, step, head, value, q, significant), not every column
    of the table it is given: the supplement stays small, the table stays whole in the store."""
    maps = pd.DataFrame([{"model": "m", "seed": s, "step": t, "unit": "head", "direction": d, "layer": l, "head": h,
                          "effect": 0.1, "share": 0.2, "q": 0.04, "significant": True, "boot_low": 0.0,
                          "boot_high": 0.3, "fdr_family": "x", "r2_clean": 0.5,
                          "r2_counterfactual": 0.5 if t == 0 else 0.1}
                         for s in (0, 1) for t in (0, 8) for d in ("noise", "denoise") for l in (0, 1) for h in (0, 1)])
    for direction, value in (("noise", "effect"), ("denoise", "share")):
        spec = viz.patch_map_chart(maps, direction).to_dict()
        rows = next(iter(spec["datasets"].values()))
        assert len(rows) == 16 and set(rows[0]) == {"seed", "step", "head_id", value, "shown", "q", "significant"}
        # sufficiency is drawn only where the clean run beats the counterfactual (step 0 here: no margin, grey)
        drawn = {r["step"] for r in rows if r["shown"] is not None}
        assert drawn == ({0, 8} if direction == "noise" else {8})


def test_the_intervention_explorer_opens_on_stored_intact_scores_and_measures_only_what_is_picked():
    from types import SimpleNamespace

    from lexprobe.views.widgets import intervention_explorer

    calls: list[tuple[int, int, object]] = []

    def performance(seed, step, intervention=None):
        calls.append((seed, step, intervention))
        return pd.DataFrame({"layer": [0, 1], "r2": [0.5, 0.25], "auc": 0.7})

    live = SimpleNamespace(suite=SimpleNamespace(models=("m",), steps=(0, 8)), seeds=(0, 1), steps=(0, 8),
                           performance=performance)
    found = SimpleNamespace(stats=pd.DataFrame({"layer": [0, 1], "head": [1, 0], "passes": [True, False]}))
    intact = pd.DataFrame({"model": "m", "seed": [0, 0, 1, 1], "step": 8, "layer": [0, 1, 0, 1],
                           "r2": [0.1, 0.2, 0.3, 0.4], "auc": 0.6})
    widget = intervention_explorer(live, found, intact)
    assert calls == []  # opened on kind "none" with the stored scores: nothing loaded, nothing measured
    shown = widget.result.to_dict()
    assert [r["r2"] for r in shown["datasets"][next(iter(shown["datasets"]))]] == [0.1, 0.2]
    kind = next(c for c in widget.children if getattr(c, "description", "") == "kind")
    kind.value = "zero"
    assert len(calls) == 1 and calls[0][:2] == (0, 8) and calls[0][2] is not None  # the intervened run, live
    got = widget.result.to_dict()
    assert [r["condition"] for r in got["datasets"][next(iter(got["datasets"]))]] == ["intact"] * 2 + ["zero"] * 2
    step = next(c for c in widget.children if getattr(c, "description", "") == "step")
    kind.value, step.value = "none", 0  # a checkpoint the stored table lacks: measured live, intact
    assert calls[-1] == (0, 0, None)
    kind.value = "qk-copy"  # copies from the suite's earliest step after 0, as stage 4 does
    assert (calls[-1][2].method, calls[-1][2].source_step) == ("copy", 8)
    live.suite.steps = (0,)  # nothing to copy from: not offered
    kind = next(c for c in intervention_explorer(live, found, intact).children if c.description == "kind")
    assert "qk-copy" not in kind.options and "qk-zero" in kind.options


def test_the_intervention_explorer_runs_every_kind_it_offers_on_a_tiny_model(local_suite, few):
    from types import SimpleNamespace

    from lexprobe import Study
    from lexprobe.checkpoints.suites import local_folder
    from lexprobe.engine.interventions import KINDS
    from lexprobe.views.widgets import intervention_explorer

    live = Study(local_folder(local_suite), few, progress=False).live
    found = SimpleNamespace(stats=pd.DataFrame({"layer": [0, 1], "head": [1, 0], "passes": [True, True]}))
    widget = intervention_explorer(live, found)
    kind = next(c for c in widget.children if getattr(c, "description", "") == "kind")
    step = next(c for c in widget.children if getattr(c, "description", "") == "step")
    step.value = 0  # qk-copy then copies step 4's weights into step 0
    assert list(kind.options) == list(KINDS)
    for name in KINDS:
        kind.value = name
        got = widget.result.to_dict()
        rows = pd.DataFrame(got["datasets"][next(iter(got["datasets"]))])
        counts = rows["condition"].value_counts()  # every layer measured, not an error left unshown
        assert set(counts.index) == {"intact"} | {name} - {"none"} and counts.nunique() == 1, name


def test_the_supplements_new_charts_have_their_legends_and_keep_controls_apart():
    """Stage 3 draws its control apart (grey, its own panel, a failed test marked), stage 2 the discovered heads'
    cue attention beside R², stage 4 the regression per seed: every colour series explained by a legend."""
    best = pd.DataFrame([{"model": "m", "seed": sd, "step": st, "r2": 0.1 * sd + 0.001 * st, "perturbation": p}
                         for sd in range(2) for st in (0, 8, 64) for p in ("intact", "separate-old", "neutral")])
    chart = viz.perturbation_chart(best, controls=("neutral",))
    spec = viz.spec_of(chart)
    assert viz.legend_problems(spec) == []
    colour = spec["encoding"]["color"]["scale"]
    assert colour["range"][colour["domain"].index("neutral")] == viz.CONTROL_GREY
    heads = pd.DataFrame([{"model": "m", "seed": 0, "step": 64, "layer": 0, "head": h, "perturbation": p, "role": r,
                           "test": "t", "retained": 0.5 + 0.1 * h, "passes": h != 1, "cue_intact": 0.3,
                           "cue_perturbed": 0.2, "control": 0.1, "q": 0.01, "discovered": True}
                          for h in range(3) for p, r in (("separate-old", "perturbation"), ("neutral", "control"))])
    spec = viz.spec_of(viz.robustness_heatmap(heads))
    assert [p["layer"][0]["encoding"]["x"]["title"] for p in spec["hconcat"]] == ["moved cues", "control"]
    marks = [row["fails"] for rows in spec["datasets"].values() for row in rows]
    assert marks.count("✗") == 2 and viz.legend_problems(spec) == []  # head 1 fails in both panels: marked in both
    stats = pd.DataFrame([{"model": "m", "seed": sd, "layer": 0, "head": h, "passes": h < 2} for sd in range(2)
                          for h in range(3)])
    traj = pd.DataFrame([{"model": "m", "seed": sd, "step": st, "layer": 0, "head": h, "cue_attn": 0.1 * h}
                         for sd in range(2) for st in (0, 8, 64) for h in range(3)])
    assert viz.legend_problems(viz.attention_beside_score(traj, best[best["perturbation"] == "intact"], stats)) == []
    reg = pd.DataFrame([{"family": f, "seed": sd, "target_coef": 0.01, "target_low": 0.0, "target_high": 0.02,
                         "target_p": 0.5, "target_p_sets": 0.5} for f in ("qk-copy", "qk-zero") for sd in range(2)])
    assert viz.legend_problems(viz.regression_chart(reg)) == []


def test_the_attention_inspector_keeps_intact_maps_and_reopens_without_a_checkpoint(local_suite, few, tmp_path,
                                                                                    monkeypatch):
    import lexprobe.live
    from lexprobe import Study
    from lexprobe.checkpoints.suites import local_folder

    live = Study(local_folder(local_suite), few, progress=False, root=str(tmp_path / "res")).live
    sid = int(few.sentences["sentence_id"].iloc[0])
    late, early = live.attention(0, 4, sid), live.attention(0, 0, sid)
    assert len(list((tmp_path / "res" / "_live").glob("attention-*.npz"))) == 2  # one file per checkpoint
    assert not np.allclose(late["attention"], early["attention"])  # the two steps' models differ
    monkeypatch.setattr(lexprobe.live, "loaded_checkpoint", lambda *a: pytest.fail("a kept map loaded a model"))
    again = live.attention(0, 4, sid)
    assert (again["tokens"], again["target"], again["cue"]) == (late["tokens"], late["target"], late["cue"])
    assert np.array_equal(again["attention"], late["attention"]) and again["attention"].shape[0] == 2
    with pytest.raises(pytest.fail.Exception, match="loaded a model"):  # any other sentence is measured live
        live.attention(0, 4, int(few.sentences["sentence_id"].iloc[1]))


def test_the_offline_chart_bundle_is_altairs_own_built_once_per_version(tmp_path, monkeypatch):
    from lexprobe.views import offline

    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path))
    text = offline.offline_bundle()
    assert offline.bundle_path().parent == tmp_path / "cache" and "altair-" in offline.bundle_path().name
    assert offline.bundle_path().read_text(encoding="utf-8") == text == offline.built_bundle()
    assert "esm.sh" not in text and len(text) > 100_000  # vega, vega-lite and vega-embed inside: nothing fetched
    monkeypatch.setattr(offline, "built_bundle", lambda: pytest.fail("built again"))
    assert offline.offline_bundle() == text


def test_views_keep_the_slow_iri_parser_out_of_the_kernel():
    import subprocess
    import sys

    code = ("import sys, lexprobe.views.viz, jsonschema; from jsonschema import _format; "
            "print(sys.modules['rfc3987_syntax'] is None, 'altair' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]
