"""The findings in words are generated from the stage tables: every number in a sentence is a quote, and the key
claims, parsed back out of the text, equal the values in their tables (the smoke organism, all five stages)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from lexprobe import Study
from lexprobe.report import across, findings, report_of
from lexprobe.report.findings import read_back
from lexprobe.stages.registry import Skipped

NUMBER = re.compile(r"(?<![\w.\-])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?%?")
# names of seeds, heads and stages, not numbers
IDENTIFIERS = re.compile(r"\bseeds? \d+(?:(?:, | and )\d+)*|\bL\d+H\d+\b|\bstage \d\b")
STAGES = ("inflection", "discovery", "perturbation", "causal", "replication")


@pytest.fixture(scope="module")
def results():
    with pytest.MonkeyPatch.context() as m:
        m.setenv("LEXPROBE_SMOKE", "1")
        study = Study(progress=False)
        got = {name: study.outcome(name) for name in STAGES}
        got["said"] = {name: report_of(name).findings(got[name], study.earlier(name)) for name in STAGES}
        got["across"] = across.of_study(study)
        got["said"]["across"] = across.conclusion(got["across"])
    assert not any(isinstance(r, Skipped) for r in got.values()), got
    return got


def text_of(stage: str, results) -> str:
    return " ".join(f.text for f in results["said"][stage])


@pytest.mark.parametrize("stage", [*STAGES, "across"])
def test_every_number_in_a_finding_is_a_quote_of_its_table(results, stage):
    for f in results["said"][stage]:
        numbers = NUMBER.findall(IDENTIFIERS.sub("", f.text))
        assert sorted(numbers) == sorted(q.text for q in f.quotes), f.text  # nothing unquoted, nothing missing
        for q in f.quotes:
            assert format(read_back(results[stage], q), q.fmt) == q.text


def test_the_onsets_in_words_equal_stage_1s_table(results):
    s1 = results["inflection"]
    said = re.findall(r"step (\d+) \[(\d+), (\d+)\] in seed (\d+)", text_of("inflection", results))
    assert said, "no onset with an interval in the findings"
    table = s1.inflection.set_index("seed")
    for onset, low, high, seed in said:
        r = table.loc[int(seed)]
        assert (int(onset), int(low), int(high)) == tuple(
            int(f"{v:.0f}") for v in (r.onset_step, r.onset_boot_low_step, r.onset_boot_high_step))
    flat = table[table["onset_step"].isna()]
    assert len(said) == len(table) - len(flat)


def test_the_heads_in_words_equal_stage_2s_table(results):
    s2 = results["discovery"]
    text = text_of("discovery", results)
    passing = s2.stats[s2.stats["passes"]]
    got = re.search(r"pass in (\d+) of (\d+) seeds", text)
    assert got and (int(got[1]), int(got[2])) == (passing["seed"].nunique(), s2.stats["seed"].nunique())
    per_seed = {int(s): int(n) for s, n in re.findall(r"seed (\d+): (\d+)", text)}
    assert per_seed == s2.stats.groupby("seed")["passes"].sum().astype(int).to_dict()


def test_the_patching_and_seed_claims_equal_their_tables(results):
    s4, s5 = results["causal"], results["replication"]
    maps = s4.patching.patch_maps
    heads = maps[(maps["unit"] == "head") & (maps["step"] == maps["step"].max())]
    said = [int(n) for n in re.findall(r"(\d+) \(head, seed\) cases", text_of("causal", results))]
    assert said == [int(heads.loc[heads["direction"] == d, "significant"].sum()) for d in ("noise", "denoise")]
    spread = s5.spread.iloc[0]
    text = text_of("replication", results)
    if np.isfinite(spread["p"]):
        q, p = re.search(r"Cochran's Q = ([\d.]+) \(p = ([\d.e-]+)\)", text).groups()
        assert float(q) == pytest.approx(spread["Q"], abs=0.05) and float(p) == pytest.approx(spread["p"], rel=0.01)
        assert ("do not differ" in text) == (spread["p"] >= findings.CONSTANTS["alpha"])
    else:
        assert "Too few seeds" in text


def test_the_abstract_states_each_stages_headline_including_the_causal_test_and_the_conclusion(results):
    """The abstract is every stage's headline findings and the conclusion's: stage 4's is the original study's QK-edit
    test of the discovered heads (whichever way it goes), not only the patching maps."""
    said = results["said"]
    text = findings.abstract(said)
    assert all(f.text in text for found in said.values() for f in findings.headlines(found))
    assert said["across"][-1].headline and said["across"][-1].text in text  # the conclusion's last word
    # the smoke organism discovers no head, so stage 4 has no QK test there: a stage 4 result that has one
    tests = pd.DataFrame([{"family": family, "model": "m", "seed": sd, "step": 8, "drop_r2": 0.01, "p": 0.4,
                           "p_floor": 0.0099, "n_random": 100} for family in ("qk-copy", "qk-zero") for sd in (0, 1)])
    empty = pd.DataFrame(columns=["step", "unit", "direction", "seed", "significant", "size"])
    s4 = SimpleNamespace(ablation=SimpleNamespace(tests=tests, regression=None),
                         patching=SimpleNamespace(patch_maps=empty, greedy_tests=empty, patch_agreement=empty))
    said = {"causal": report_of("causal").findings(s4, {})}
    text = findings.abstract(said)
    qk = [f.text for f in said["causal"] if f.text.startswith("qk-copy")]
    assert len(qk) == 1 and qk[0] in text and "in 0 of 2 seeds" in qk[0]  # negative, and still the headline
    not_headline = [f.text for f in said["causal"] if not f.headline]
    assert not_headline and not any(t in text for t in not_headline)  # qk-zero's sentence stays in stage 4


def test_the_conclusion_counts_equal_the_head_table(results):
    """The per-head table joins the stages correctly: every head stage 2 passes is in it as discovered, every
    head a patching map calls significant at the last checkpoint as necessary or sufficient, and no other head."""
    a, s2, s4 = results["across"], results["discovery"], results["causal"]
    key = ["seed", "layer", "head"]
    passing = {tuple(r) for r in s2.stats.loc[s2.stats["passes"], key].itertuples(index=False)}
    maps = s4.patching.patch_maps
    last = maps[(maps["unit"] == "head") & (maps["step"] == maps.groupby("seed")["step"].transform("max"))]
    named = {d: {tuple(r) for r in last.loc[(last["direction"] == d) & last["significant"], key]
                 .itertuples(index=False)} for d in ("noise", "denoise")}
    rows = {tuple(r) for r in a.heads[key].itertuples(index=False)}
    assert rows == passing | named["noise"] | named["denoise"]
    assert {tuple(r) for r in a.heads.loc[a.heads["discovered"], key].itertuples(index=False)} == passing
    assert {tuple(r) for r in a.heads.loc[a.heads["necessary"], key].itertuples(index=False)} == named["noise"]
    assert a.seeds["discovered"].sum() == len(passing)


def test_a_sentence_with_an_unquoted_number_is_caught():
    """The check above can fail: a hand-written number in a sentence is not among its quotes."""
    f = findings.Finding("onset at step 176 in seed 0 with 12 heads", ())
    assert NUMBER.findall(IDENTIFIERS.sub("", f.text)) == ["176", "12"]


def test_the_ground_truth_clause_quotes_the_shipped_scores_and_says_when_there_are_none(tmp_path, monkeypatch):
    from lexprobe.analysis import groundtruth
    from lexprobe.report.findings import Writer, ground_truth

    monkeypatch.setattr(groundtruth, "scores_path", lambda: tmp_path / "methods.csv")
    w = Writer(object())
    assert "not shipped" in ground_truth(w, "original + trend") and not w.quotes
    table = pd.DataFrame([{"split": s, "rule": "original + trend", "units": u, "precision": 0.5, "precision_low": 0.25,
                           "precision_high": 0.75, "recall": r, "recall_low": 0.1, "recall_high": 0.3,
                           "decoy_fpr": 0.125} for s, u, r in (("choose", 30, 0.2), ("all", 60, 0.15))])
    groundtruth.write_scores(table, {"stage 2 default": "keep"}, "lexprobe validate --rules")
    text = ground_truth(w, "original + trend")
    assert "(60 organism seeds" in text and "recall 0.15 [0.10, 0.30]" in text
    assert "names 12% of the certified decoy" in text
    assert sorted(NUMBER.findall(text)) == sorted(q.text for q in w.quotes)
    assert all(format(read_back(None, q), q.fmt) == q.text for q in w.quotes)


def test_the_stages_joined_when_only_stage_2_ran():
    """With the later stages skipped, the per-head table holds stage 2's columns, the conclusion says only what they
    show (every number a quote) and the section renders without the columns of stages that did not run."""
    from lexprobe.stages.registry import Skipped
    from lexprobe.views.html import Page

    stats = pd.DataFrame([{"model": "m", "seed": sd, "layer": 0, "head": h, "passes": h == sd, "r": 0.5, "q": 0.01,
                           "beats_prev": True} for sd in range(2) for h in range(3)])
    skipped = Skipped("later", "one seed")
    joined = across.across({"discovery": SimpleNamespace(stats=stats), "perturbation": skipped, "causal": skipped,
                            "replication": skipped})
    assert joined.ran == ("discovery",) and len(joined.heads) == 2 and "necessary" not in joined.heads
    said = across.conclusion(joined)
    assert len(said) == 1 and "discovers 2 (head, seed) cases" in said[0].text
    assert sorted(NUMBER.findall(IDENTIFIERS.sub("", said[0].text))) == sorted(q.text for q in said[0].quotes)
    page = Page()
    page.view(across.view(joined))
    assert "Each discovered head" in "".join(page.blocks)
