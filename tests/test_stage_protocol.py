"""The stage protocol: every setting of a study is honoured by every stage or refused by it, before any work; a stage
is its module and its report (a toy stage reaches the command line, the supplement and the plan); the report's
wording is outside every stage's cache key; a stage skips only the parts that need what is missing."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL

import lexprobe.report as report_mod
from lexprobe import Study
from lexprobe.base import code as code_hash
from lexprobe.base.paths import REPO_ROOT
from lexprobe.base.view import Text, View
from lexprobe.cli import build_parser
from lexprobe.engine.interventions import HeadAblation
from lexprobe.report import Report
from lexprobe.stages import STAGES, register
from lexprobe.stages.costs import StageCost
from lexprobe.stages.registry import Plugin, Skipped

USES = ("reads", "shared", "where", "not used")


def test_every_setting_has_one_use_in_every_stage():
    """The table of uses covers every setting and stage once, in a known vocabulary; what a stage reads or refuses is
    a setting."""
    uses = Study.setting_uses()
    names = {f.name for f in fields(Study)}
    assert len(uses) == len(names) * len(STAGES) and not uses.duplicated(["setting", "stage"]).any()
    assert set(uses["setting"]) == names and set(uses["stage"]) == set(STAGES)
    assert all(u in USES or u.startswith(("via ", "refused: ")) for u in uses["use"]), set(uses["use"])
    for stage in STAGES.values():
        assert set(stage.reads) <= names and set(stage.refuses) <= names, stage.name
    table = uses.set_index(["setting", "stage"])["use"]
    assert table["intervention", "causal"].startswith("refused: ")
    assert table["intervention", "perturbation"] == "shared" and table["n_random", "replication"] == "via causal"


def test_an_intervened_study_measures_every_stage_under_its_intervention_or_is_refused(suite, small, tmp_path):
    """Every stage either runs on the intervened model alone (its stored reads are under the study's condition, its
    numbers differ from the intact study's where it measures) or is refused with the setting named. Before, stage 3
    measured its perturbed sets on the intact model and divided them by the intervened model's scores."""
    root = str(tmp_path / "res")
    iv = HeadAblation(((0, 0), (0, 1), (0, 2), (0, 3)))  # every head of layer 0 zeroed
    intact, intervened = Study(suite, small, root=root, **SMALL), Study(suite, small, root=root, intervention=iv,
                                                                        **SMALL)
    uses = Study.setting_uses().set_index(["setting", "stage"])["use"]
    seen = {}
    for name, stage in STAGES.items():
        out = intervened.outcome(name)
        refused = uses["intervention", name].startswith("refused")
        if refused:
            assert isinstance(out, Skipped) and "refuses intervention=" in out.reason, (name, out)
            seen[name] = "refused"
            continue
        assert not isinstance(out, Skipped), (name, out)
        earlier = {n: intervened.outcome(n) for n in (*stage.needs, *stage.uses)}
        for r in stage.prepare(intervened.seen_by(stage), earlier).reads:
            assert r.conditions == (iv.condition,), (name, r)  # nothing of the intact model is read
        seen[name] = "honoured"
    assert seen == {"inflection": "honoured", "discovery": "honoured", "perturbation": "honoured",
                    "causal": "refused", "replication": "honoured", "validation": "refused"}
    s3, s3i = intact.perturbation, intervened.perturbation
    for label in sorted(set(s3.best["perturbation"]) - {"intact"}):
        a = s3.best[s3.best["perturbation"] == label]["r2"].to_numpy()
        b = s3i.best[s3i.best["perturbation"] == label]["r2"].to_numpy()
        assert not np.allclose(a, b), label  # the perturbed sets were measured on the intervened model
    base = intervened.inflection.best.set_index(["seed", "step"])["r2"]
    mine = s3i.best[s3i.best["perturbation"] == "intact"].set_index(["seed", "step"])["r2"]
    pd.testing.assert_series_equal(mine, base.loc[mine.index])  # the baseline is the intervened stage 1
    assert "the stage-4 effects per seed" in set(intervened.replication.parts_skipped["part"])


def test_a_refused_stage_does_no_work(suite, small, tmp_path, monkeypatch):
    """A refusal comes before the stage prepares, measures or runs anything."""
    def fail(*a, **k):
        pytest.fail("a refused stage started its work")

    monkeypatch.setattr(STAGES["causal"], "prepare", fail)
    monkeypatch.setattr(STAGES["causal"], "run", fail)
    study = Study(suite, small, root=str(tmp_path / "res"), intervention=HeadAblation(((1, 0),)), **SMALL)
    out = study.outcome("causal")
    assert isinstance(out, Skipped) and "stage 4 refuses intervention=ablate-" in out.reason


@dataclass
class Toy:
    """A toy stage's result."""

    best: pd.DataFrame


class ToyStage(Plugin):
    """A toy stage: the first rows of stage 1's best layers."""

    name, label, title, result = "toy", "stage 6", "Is the toy here?", Toy
    summary, needs = "a toy stage", ("inflection",)

    def run(self, study, earlier, prepared):
        return Toy(earlier["inflection"].best.head(3))

    def cost(self, study, costing):
        return StageCost(self.name, units=7)


@pytest.fixture()
def toy():
    """The toy stage and its report registered, and both registries restored afterwards."""
    before = dict(STAGES)
    register(ToyStage())
    report_mod.REPORTS["toy"] = Report(lambda r, e: View("Toy view", "toy", (Text(f"toy rows {len(r.best)}"),)))
    yield
    STAGES.clear()
    STAGES.update(before)
    report_mod.REPORTS.pop("toy")


def test_a_toy_stage_is_a_command_a_supplement_section_and_a_plan_row(toy, suite, small, tmp_path, monkeypatch,
                                                                       capsys):
    """Adding a stage is its module and its report: registered, it is a command of its own, a section of the
    supplement and a row of the plan, with nothing else written for it."""
    from lexprobe.plan import study_plan
    from lexprobe.supplement import write_report

    assert list(STAGES)[-1] == "validation" and "toy" in STAGES
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sub.choices["toy"].get_default("stage") == "toy"
    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path / "home"))
    study = Study(suite, small, root=str(tmp_path / "res"), cache=False, **SMALL)
    html = write_report(study, tmp_path / "r.html").read_text()
    assert "Toy view" in html and "toy rows 3" in html
    plan = study_plan(study)
    assert any(line.split()[:3] == ["6", "toy", "7"] for line in plan.splitlines()), plan


def test_rewording_a_view_changes_no_stage_key(tmp_path, monkeypatch):
    """A stage's cache key hashes the code it imports; the report is not among it. In a copy of the package, a
    sentence of a view reworded leaves every stage's code fingerprint as it was, and a comment added to a stage
    module changes that stage's (the check can fail)."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "lexprobe", copy / "lexprobe", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_hash, "REPO_ROOT", copy)
    modules = {name: type(stage).__module__ for name, stage in STAGES.items()}

    def keys() -> dict[str, str]:
        code_hash._imports.cache_clear()
        return {name: code_hash.code_fingerprint.__wrapped__(m) for name, m in modules.items()}

    before = keys()
    view = copy / "lexprobe" / "report" / "inflection_report.py"
    text = view.read_text()
    assert "takes off at" in text
    view.write_text(text.replace("takes off at", "begins to rise at"))
    assert keys() == before
    stage = copy / "lexprobe" / "stages" / "replication.py"
    stage.write_text(stage.read_text() + "\n# a comment\n")
    after = keys()
    assert after["replication"] != before["replication"] and after["inflection"] == before["inflection"]
    assert not any("report" in f.parts for m in modules.values() for f in code_hash.code_files(m))


def test_without_discovery_stage_4_runs_what_needs_no_discovered_heads(suite, small, tmp_path):
    """Three checkpoints are too few for head discovery; stage 4 still patches every head and seeks the greedy
    sets, and stage 3 still scores its perturbed sets; each says which part it left out and why."""
    few = Study(suite, small, steps="0,1,2", root=str(tmp_path / "res"), **SMALL)
    assert ">= 4 checkpoints" in few.outcome("discovery").reason
    s4 = few.causal
    design = s4.ablation.design
    assert len(s4.patching.patch_maps) and len(s4.patching.greedy_tests)
    assert set(design.loc[design["role"] == "target", "family"]) == {"edges"}  # the edge control, no discovered set
    assert set(s4.parts_skipped["needs"]) == {"discovery"}
    assert all(">= 4 checkpoints" in r for r in s4.parts_skipped["reason"])
    s3 = few.perturbation
    assert len(s3.retained) and s3.summary.empty and list(s3.parts_skipped["part"]) == ["the discovered heads' summary"]
    shown = report_mod.view(few, "causal")
    assert any(isinstance(b, Text) and b.text.startswith("Left out: the discovered heads' ablations") for b in
               shown.blocks)
    assert "needs discovery" in few.outcome("replication").reason
