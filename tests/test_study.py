"""The Study: one set of settings reaches every stage; stage results are cached in the study's store and invalidated
by exactly what they depend on; the CLI's flags mean one thing everywhere."""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys

import pandas as pd
import pytest
from conftest import SMALL

import lexprobe.analysis.performance as performance_mod
import lexprobe.stages.causal as causal_mod
import lexprobe.stages.discovery as stage2_mod
import lexprobe.stages.inflection as stage1_mod
from lexprobe import Study
from lexprobe.cli import build_parser, main, timing_line
from lexprobe.stages.patching import counterfactual_of
from lexprobe.stages.perturbation import perturbation_steps, perturbed_sets
from lexprobe.stimuli.tables import StimulusError
from lexprobe.store.results import ResultsStore, Unit


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_a_study_in_another_root_never_touches_the_default_store(suite, small, home, tmp_path):
    """Defect 1: every stage (and the runners given a finished stage 1) reads and writes the study's root."""
    study = Study(suite, small, root=str(tmp_path / "elsewhere"), **SMALL)
    s1 = study.inflection
    study.discovery, study.perturbation, study.replication  # noqa: B018 - run them all
    assert not (home / "results").exists()
    assert str(s1.store.root) == str(tmp_path / "elsewhere") and s1.store is study.store
    # a study with other settings on the same root follows it too
    s4 = study.with_(methods=("zero",)).causal
    assert not (home / "results").exists() and set(s4.ablation.best["condition"]) > {"intact"}
    stored = {p.name for p in (tmp_path / "elsewhere" / "_stages" / "study-tiny" / "small6").iterdir()}
    assert stored == {"inflection", "discovery", "perturbation", "perturbation-sets", "causal",
                      "causal-counterfactual", "replication"}


def test_best_layer_rule_and_embedding_exclusion_reach_every_stage(suite, small, tmp_path, monkeypatch):
    """Defect 2: with by="signed" and exclude_embedding, every best layer of stages 1-4 is chosen by that rule and
    stage 2 follows the signed score."""
    calls: list[tuple[str, bool]] = []
    real_best, real_discover = performance_mod.best_layer, stage2_mod.discover

    def spy_best(perf, exclude_embedding=False, by="r2"):
        calls.append((by, exclude_embedding))
        return real_best(perf, exclude_embedding=exclude_embedding, by=by)

    scores: list[str] = []

    def spy_discover(heads, best, score="r2", **kw):
        scores.append(score)
        return real_discover(heads, best, score=score, **kw)

    monkeypatch.setattr(performance_mod, "best_layer", spy_best)
    monkeypatch.setattr(stage2_mod, "discover", spy_discover)
    study = Study(suite, small, root=str(tmp_path / "res"), by="signed", exclude_embedding=True, cache=False, **SMALL)
    s1, s3, s4 = study.inflection, study.perturbation, study.causal
    assert scores == ["r2_signed"]
    assert len(calls) >= 3 and set(calls) == {("signed", True)}  # stage 1, each perturbed set, stage 4
    for best in (s1.best, s3.best, s4.ablation.best):
        assert (best["best_layer"] > 0).all()
    intact = s4.ablation.best[s4.ablation.best["condition"] == "intact"].set_index(["seed", "step"])
    ref = s1.best.set_index(["seed", "step"])
    assert intact["best_layer"].equals(ref.loc[intact.index, "best_layer"])
    pd.testing.assert_series_equal(intact["r2_signed"], ref.loc[intact.index, "r2_signed"])


def test_auc_rule_runs_stage_1_with_its_bootstrap(suite, small, tmp_path):
    """Defect 3: by="auc" with the default item bootstrap (it raised before)."""
    s1 = Study(suite, small, root=str(tmp_path / "res"), by="auc", n_boot=20, progress=False).inflection
    assert s1.score == "auc" and s1.best["auc"].notna().all() and len(s1.inflection) == 2
    rises = s1.inflection[s1.inflection["onset_step"].notna()]
    assert (rises["n_boot"] == 20).all()


def test_stages_are_cached_and_invalidated_by_what_they_depend_on(suite, small, tmp_path, monkeypatch):
    """A second study with the same settings only reads tables (equal to the computed ones); a changed stage-2
    setting recomputes stages 2 onwards and reuses stage 1; a re-measured unit recomputes stage 1."""
    root = str(tmp_path / "res")
    first = Study(suite, small, root=root, **SMALL)
    computed = {"s1": first.inflection, "s2": first.discovery, "s4": first.causal}

    def fail(*a, **k):
        raise AssertionError("a cached stage was recomputed")

    with monkeypatch.context() as m:
        for mod, name in ((stage1_mod, "inflections"), (stage2_mod, "discover")):
            m.setattr(mod, name, fail)
        m.setattr("lexprobe.stages.ablation.nulls.causal_map", fail)
        again = Study(suite, small, root=root, **SMALL)
        pd.testing.assert_frame_equal(again.inflection.inflection, computed["s1"].inflection)
        pd.testing.assert_frame_equal(again.discovery.stats, computed["s2"].stats)
        pd.testing.assert_frame_equal(again.causal.ablation.causal_map, computed["s4"].ablation.causal_map)
        pd.testing.assert_frame_equal(again.causal.ablation.design, computed["s4"].ablation.design)
        assert again.inflection.suite is suite and again.inflection.store is again.store
    # each part's wall time is recorded once, as computed the first time and read from the cache the second
    assert [(k, t["cached"]) for k, t in first.timings.items()] == [
        ("suite", None), ("inflection", False), ("discovery", False), ("causal-counterfactual", False),
        ("causal", False)]
    assert [t["cached"] for k, t in again.timings.items() if k != "suite"] == [True, True, True, True]
    assert all(t["seconds"] >= 0 for t in first.timings.values())
    assert timing_line({"inflection": {"seconds": 2.04, "cached": True}, "report": {"seconds": 1.0, "cached": None}}) \
        == "time per part: inflection 2.0 s (cached), report 1.0 s; total 3.0 s"
    with monkeypatch.context() as m:
        m.setattr(stage1_mod, "inflections", fail)
        changed = Study(suite, small, root=root, **{**SMALL, "n_perm": 60})
        changed.inflection  # noqa: B018 - stage 1 is reused...
        assert changed.discovery.stats["p_perm_diff"].notna().all()  # ...stage 2 recomputed with the new setting
    # a unit re-measured with other numbers (new content, new sha256 in its sidecar) invalidates stage 1 and what
    # builds on it
    store = ResultsStore(root)
    unit = Unit("study-tiny", "small6", "intact", "tiny", 0, 8)
    table = store.load("distances", **unit.__dict__).iloc[:, 6:]
    store.write(unit, {"distances": table.assign(distance=table["distance"] * 0.5)},
                store.sidecar(unit, "distances"))
    calls: list[int] = []
    real = stage1_mod.inflections
    monkeypatch.setattr(stage1_mod, "inflections", lambda *a, **k: calls.append(1) or real(*a, **k))
    redone = Study(suite, small, root=root, **SMALL)
    assert not redone.inflection.pairs["distance"].equals(computed["s1"].pairs["distance"])
    assert calls == [1]
    assert redone._keyed("discovery")[1] != first._keyed("discovery")[1]  # stage 2's key follows stage 1's


OPEN_FINISHED = """
import json, pickle, sys
from lexprobe import Study
suite, stimuli, root, kw = pickle.load(open(sys.argv[1], "rb"))
study = Study(suite, stimuli, root=root, **kw)
for stage in ("inflection", "discovery", "perturbation", "causal", "replication"):
    getattr(study, stage)
print(json.dumps({"cached": {k: t["cached"] for k, t in study.timings.items() if k != "suite"},
                  "imported": [m for m in ("torch", "nnsight", "transformers", "scipy.stats") if m in sys.modules]}))
"""


def test_a_finished_study_opens_in_a_new_process_without_the_engine(suite, small, tmp_path):
    """A fresh process opening a finished study reads all five stages and the sets derived with the tokenizer from
    the stage cache, and never imports torch, nnsight or transformers; the derived sets read back equal freshly
    made ones, table for table."""
    root = str(tmp_path / "res")
    study = Study(suite, small, root=root, **SMALL)
    for stage in ("inflection", "discovery", "perturbation", "causal", "replication"):
        getattr(study, stage)
    args = tmp_path / "args.pkl"
    args.write_bytes(pickle.dumps((suite, small, root, SMALL)))
    out = subprocess.run([sys.executable, "-c", OPEN_FINISHED, str(args)], capture_output=True, text=True,
                         check=True).stdout
    got = json.loads(out.splitlines()[-1])
    assert got["imported"] == [], got
    assert got["cached"] == dict.fromkeys(["inflection", "discovery", "perturbation-sets", "perturbation",
                                           "causal-counterfactual", "causal", "replication"], True)

    def fail() -> dict:
        raise AssertionError("derived sets were made again instead of read from the stage cache")

    s1 = study.inflection
    again = Study(suite, small, root=root, **SMALL)
    read = {**again.derived("perturbation-sets", perturbation_steps(s1, 2)[-1], fail),
            **again.derived("causal-counterfactual", s1.steps[-1], fail)}
    made = {**perturbed_sets(s1, 2), "neutral": counterfactual_of(s1)}
    assert sorted(read) == sorted(made) and len(made) >= 3
    for k, ps in made.items():
        assert (read[k].name, read[k].hash) == (ps.name, ps.hash)
        pd.testing.assert_frame_equal(read[k].pairs, ps.pairs)
        pd.testing.assert_frame_equal(read[k].sentences, ps.sentences)


def test_a_stage_cannot_read_a_setting_its_cache_key_leaves_out(suite, small, tmp_path, monkeypatch):
    """Adding a setting touches two places, the Study field and the stage that reads it: a stage whose ``reads``
    omit a setting it reads fails, naming the stage and the setting, instead of caching under a key without it."""
    from lexprobe.stages import STAGES

    study = Study(suite, small, root=str(tmp_path / "res"), **SMALL)
    study.inflection  # noqa: B018 - stage 1 as declared
    monkeypatch.setattr(STAGES["discovery"], "reads", ("seed",))  # n_perm left out
    with pytest.raises(AttributeError, match="stage 'discovery' reads the study setting 'n_perm'"):
        study.with_(n_perm=51).discovery  # noqa: B018
    # every setting a stage lists is part of its key: changing one changes the key, and only that stage's
    a, b = study._keyed("inflection")[1], study.with_(n_boot=11)._keyed("inflection")[1]
    assert a is not None and b is not None and a != b


def test_every_setting_with_a_help_text_is_a_flag_of_every_stage_command():
    """The command line's study flags are made from the Study's fields: a new field with a help text is a flag of
    every stage command, with that text, and reaches the study unchanged."""
    from dataclasses import fields

    settings = {f.name: f.metadata["help"] for f in fields(Study) if f.metadata.get("help")}
    commands = _subcommands(build_parser())
    for name in ("inflection", "discovery", "perturbation", "causal", "replication", "report"):
        flags = {a.dest: a.help for a in commands[name]._actions if a.dest in settings}
        assert set(flags) == set(settings), name
        assert all(flags[k].startswith(settings[k]) for k in settings), name
    from lexprobe.cli import _study

    args = build_parser().parse_args(["causal", "--n-random", "7", "--methods", "zero,knockout", "--by", "auc"])
    s = _study(args)
    assert (s.n_random, s.methods, s.by, s.n_boot) == (7, ("zero", "knockout"), "auc", 200)


def test_a_stage_with_nothing_to_show_is_skipped_with_its_reason(suite, small, tmp_path):
    """One seed: replication is skipped (its outcome says why, its result raises a ValueError naming it); too few
    checkpoints: discovery and the stages that need it are skipped, stage 1 still stands (stage 4, which only uses
    discovery, runs without it: tests/test_stage_protocol.py)."""
    from lexprobe.stages.registry import Skipped, StageSkipped

    one = Study(suite.with_(seeds=(0,)), small, root=str(tmp_path / "res"), **SMALL)
    out = one.outcome("replication")
    assert isinstance(out, Skipped) and ">= 2 seeds" in out.reason
    with pytest.raises(StageSkipped, match="replication skipped"):
        one.replication  # noqa: B018
    few = Study(suite, small, steps="0,1,2", root=str(tmp_path / "res"), **SMALL)
    assert len(few.inflection.steps) == 3
    assert ">= 4 checkpoints" in few.outcome("discovery").reason
    assert "needs discovery" in few.outcome("replication").reason


def test_smoke_defaults_are_resolved_when_the_study_is_made(monkeypatch):
    monkeypatch.setenv("LEXPROBE_SMOKE", "1")
    s = Study()
    assert (s.n_random, s.n_random_dev, s.map_steps, s.perturb_steps) == (5, 2, 2, 4)
    monkeypatch.setenv("LEXPROBE_SMOKE", "0")
    s = Study(n_random=7)
    assert (s.n_random, s.n_random_dev, s.map_steps, s.perturb_steps) == (7, 10, 0, 0)
    assert Study(n_random=None, map_steps=None).n_random == 100  # None: the default (as the notebooks write it)
    with pytest.raises(ValueError, match="by='best'"):
        Study(by="best")
    with pytest.raises(ValueError, match=r"\['none'\] not among stage 4's"):  # fails before any stage runs
        Study(methods=("zero", "none"))


def test_plan_runs_with_its_defaults_and_trains_nothing(monkeypatch, capsys, tmp_path):
    """Defect 4: ``lexprobe plan`` with no arguments plans the default (here: smoke) organism; on a machine with no
    organism yet it plans from the profile's shape and trains nothing."""
    import lexprobe.organism.suite as organism

    monkeypatch.setenv("LEXPROBE_SMOKE", "1")
    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path / "fresh"))
    monkeypatch.setattr(organism, "ensure_trained", lambda *a, **k: pytest.fail("plan trained the organism"))
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    assert "plan: suite organism-smoke" in out and "not trained yet: planned from its profile's shape" in out
    assert "4 causal" in out and not (tmp_path / "fresh" / "organism").exists()


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_out_is_the_results_folder_in_every_command_and_v_shows_tracebacks(capsys):
    """Defect 5: ``--out`` is the results folder wherever it exists (the report file is ``--html``); ``-v`` lets
    the error through with its traceback, without it the message names the bad argument."""
    helps = {name: next((a.help for a in p._actions if "--out" in a.option_strings), None)
             for name, p in _subcommands(build_parser()).items()}
    with_out = {k: v for k, v in helps.items() if v is not None}
    assert set(with_out) >= {"extract", "plan", "inflection", "heads", "perturbation", "causal", "seeds", "report",
                             "run"}
    assert all(h.startswith("results folder") for h in with_out.values()), with_out
    assert main(["heads", "--stimuli", "nosuchset"]) == 2
    assert "no shipped stimulus set named 'nosuchset'" in capsys.readouterr().err
    with pytest.raises(StimulusError, match="nosuchset"):
        main(["-v", "heads", "--stimuli", "nosuchset"])


def test_stage_plan_counts_what_the_stages_measure_and_store(suite, small, tmp_path, monkeypatch):
    """``lexprobe plan``'s stage table, given the discovery the study really made, predicts the units stages 1, 3
    and 4 store and the files of the results store."""
    import lexprobe.plan as studyplan

    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path / "home"))
    study = Study(suite, small, root=str(tmp_path / "res"), **SMALL)
    study.causal  # noqa: B018 - stages 1, 2 and 4
    study.perturbation  # noqa: B018
    monkeypatch.setattr(causal_mod, "stand_in_discovery", lambda *a: study.discovery.stats)
    costs = {c.stage: c for c in studyplan.stage_costs(study)}
    store = ResultsStore(tmp_path / "res")
    stored = store.units("distances")
    intact = [u for u, _ in stored if u.stimuli == small.name and u.condition == "intact"]
    perturbed = [u for u, _ in stored if u.stimuli != small.name]
    causal = [u for u, _ in stored if u.stimuli == small.name and u.condition != "intact"]
    assert (costs["inflection"].units, costs["perturbation"].units, costs["causal"].units) == (
        len(intact), len(perturbed), len(causal))
    files = [f for f in (tmp_path / "res").rglob("*") if f.is_file() and "_stages" not in f.parts]
    assert sum(c.files for c in costs.values()) == len(files)
