"""The supplement is ONE self-contained HTML file: parsed here, no tag may load anything from outside the file and
every figure must be present with its Vega-Lite spec (rendering it in a browser is the browser tests' job)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import altair as alt
import pandas as pd
import pytest

from lexprobe.cli import main
from lexprobe.supplement import Page, document

FIGURES = {"performance", "layers", "heads", "perturbation", "robustness", "causal-map", "necessity-map",
           "sufficiency-map", "seed-trajectories", "seed-heads", "seed-ablation"}
OPTIONAL = {"ablation", "qk-edit", "recovery"}  # drawn only when discovery passes heads / there is R^2 to recover


class Parsed(HTMLParser):
    """Every start tag with its attributes, and the text of every <script> with its attributes."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._script: dict | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs)
            self.scripts.append((self._script, ""))

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None

    def external(self) -> list[tuple[str, dict]]:
        """Tags that would fetch or link outside the file (any src/srcset, any href but an in-page anchor)."""
        bad = []
        for tag, attrs in self.tags:
            if {"src", "srcset"} & set(attrs) or (tag in ("object", "embed") and "data" in attrs):
                bad.append((tag, attrs))
            elif "href" in attrs and not str(attrs["href"]).startswith("#"):
                bad.append((tag, attrs))
        return bad

    def figures(self) -> dict[str, dict]:
        """Figure div id -> its parsed spec; fails if a div has no spec or a spec no div."""
        divs = {a["id"] for t, a in self.tags if t == "div" and "lexprobe-figure" in a.get("class", "")}
        specs = {a["data-figure"]: json.loads(text) for a, text in self.scripts if a.get("class") == "lexprobe-spec"}
        assert divs == set(specs), (divs, set(specs))
        return specs


def test_document_is_self_contained_and_script_safe():
    hostile = "</script><script src='http://example.org/x.js'>"
    chart = alt.Chart(pd.DataFrame({"label": [hostile, "b"], "value": [1, 2]})).mark_bar().encode(x="label", y="value")
    page = Page()
    page.chart("bars", chart, "a caption with <b>markup</b>")
    page.table(pd.DataFrame({"cell": ["<a href='http://example.org'>x</a>"]}), "table")
    parsed = Parsed(document("title", page))
    assert parsed.external() == []
    specs = parsed.figures()
    assert list(specs) == ["fig-1-bars"]
    assert specs["fig-1-bars"] == json.loads(json.dumps(chart.to_dict()))  # the hostile value survives as data
    bundle = [text for attrs, text in parsed.scripts if not attrs]
    assert any("vegaEmbed" in text and len(text) > 100_000 for text in bundle)  # the libraries, inline


def test_run_ends_with_a_self_contained_report(tmp_path, monkeypatch, capsys):
    """``lexprobe run`` on the smoke organism (in $LEXPROBE_HOME: trained and measured once, shared with the
    notebooks, which then reuse stages 3-4 from the store) prints where it wrote the report."""
    from lexprobe import Study

    monkeypatch.setenv("LEXPROBE_SMOKE", "1")
    out = tmp_path / "supplement.html"
    assert main(["run", "--html", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"report \(all five stages.*\): {re.escape(str(out))}$", printed, re.M)
    text = out.read_text(encoding="utf-8")
    parsed = Parsed(text)
    assert parsed.external() == []
    specs = parsed.figures()
    names = {re.sub(r"^fig-\d+-", "", fid) for fid in specs}
    study = Study(progress=False)
    s1, s2 = study.inflection, study.heads
    assert FIGURES <= names and names - FIGURES <= OPTIONAL
    assert ("ablation" in names) == bool(s2.stats["passes"].any())  # only with a discovered set to ablate
    for spec in specs.values():
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/v6")
    seed_panels = next(s for f, s in specs.items() if f.endswith("seed-trajectories"))["concat"]
    assert len(seed_panels) == s1.best["seed"].nunique()
    heads = next(s for f, s in specs.items() if f.endswith("seed-heads"))
    counts = pd.DataFrame(next(iter(heads["datasets"].values())))
    assert counts["n_seeds_selecting"].sum() == s2.stats["passes"].sum()
    anchors = {a["id"] for t, a in parsed.tags if t.startswith("h") and "id" in a}
    assert {"stage1", "stage2", "stage3", "stage4", "stage5", "validation", "provenance"} <= anchors
    assert s1.stimuli.hash in text and f"lexprobe run --html {out}" in text
    assert "statsmodels" in text and "seed: intercept variance" in text


@pytest.mark.parametrize("args,message", [
    (["report", "--suite", "gpt-17"], "unknown suite 'gpt-17'"),
    (["seeds", "--suite", "organism", "--stimuli", "nosuchset"], "no shipped stimulus set named 'nosuchset'"),
    (["causal", "--by", "signed", "--stimuli", "missing.csv"], "missing.csv"),
])
def test_report_commands_name_the_bad_argument(args, message, capsys):
    assert main(args) == 2
    assert re.search(message, capsys.readouterr().err)
