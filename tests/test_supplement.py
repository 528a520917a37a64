"""The supplement is ONE self-contained HTML file: parsed here, no tag may load anything from outside the file and
every figure must be present with its Vega-Lite spec (rendering it in a browser is the browser tests' job)."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser

import altair as alt
import pandas as pd
import pytest

from lexprobe.base.view import Figure, Heading, Table, Text, View
from lexprobe.cli import main
from lexprobe.report.causal_report import NO_SET, ZERO_OPT_IN
from lexprobe.supplement import document
from lexprobe.views.html import MAX_COLUMNS, MAX_ROWS, Page, show
from lexprobe.views.text import render_text

FIGURES = {"performance", "layers", "heads", "perturbation", "robustness", "necessity-map", "sufficiency-map",
           "seed-trajectories", "seed-heads"}
# drawn only when discovery passes heads (ablation, qk-edit, seed-ablation), with the opt-in single-head map
# (causal-map) or when there is R^2 to recover (recovery)
OPTIONAL = {"ablation", "qk-edit", "seed-ablation", "causal-map", "recovery", "regression", "attention-beside-score"}


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


VIEW = View("Stage 9 · A made-up stage", "stage9", (
    Text("A finding: 3 < 4."),
    Text("How to read it.", note=True),
    Figure("layer_chart", {"perf": pd.DataFrame({"step": [0, 1], "layer": [0, 0], "r2": [0.1, 0.2]})},
           "score per layer", "layers"),
    Table(pd.DataFrame({"seed": [0, 1], "r2": [0.123456, None]}), "Scores per seed (R²)"),
    Heading("A sub-section", anchor="sub"),
    Table(pd.DataFrame({"seed": [], "p": []}), "Heads that pass"),
    Table(pd.DataFrame({"a": [1]}), "Every row", collapsed=True)))


def html_captions(body: str) -> list[str]:
    """The captions of an HTML body's tables, in order (bold ones and folded ones, without the row count)."""
    found = re.findall(r"<p><b>([^<]*)</b>(?: \(no rows\))?</p>|<summary>([^<]*) \(\d+ rows\)</summary>", body)
    return [html.unescape(bold or folded) for bold, folded in found]


def test_one_view_renders_as_text_and_as_html_with_every_table():
    page = Page()
    page.view(VIEW)
    body, text = "\n".join(page.blocks), render_text(VIEW)
    captions = [b.caption for b in VIEW.blocks if isinstance(b, Table)]
    assert html_captions(body) == captions
    at = [text.index(f"{c}:") for c in captions]
    assert at == sorted(at)  # every table in the text too, in the view's order
    assert "0.1235" in text and "Heads that pass: (no rows)" in text and "<b>Heads that pass</b> (no rows)" in body
    for line in ("A finding: 3 < 4.", "How to read it.", "A sub-section", "[figure: score per layer]"):
        assert line in text
    assert "<p>A finding: 3 &lt; 4.</p>" in body and "<p class=note>How to read it.</p>" in body
    assert '<h2 id="stage9">Stage 9 · A made-up stage</h2>' in body and '<h3 id="sub">A sub-section</h3>' in body
    assert list(page.figures) == ["fig-1-layers"] and "Figure 1: score per layer" in body


def test_a_view_shows_in_a_notebook_as_the_same_html_with_each_figure_an_offline_chart(monkeypatch):
    shown: list[tuple] = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append((obj, kw)))
    show(VIEW)
    assert [("chart" if kw.get("raw") else "html") for _, kw in shown] == ["html", "chart", "html"]
    (before, _), (chart, meta), (after, _) = shown
    assert "application/vnd.jupyter.widget-view+json" in chart and meta == {"metadata": {}, "raw": True}
    body = before.data + after.data
    page = Page()
    page.view(VIEW)
    assert html_captions(body) == html_captions("".join(page.blocks))  # the supplement's tables, in order
    assert "A finding: 3 &lt; 4." in before.data and "Figure 1: score per layer" in after.data
    assert "[figure" not in body and 'class="lexprobe-figure"' not in body  # the chart stands in its slot


def test_a_skipped_stage_says_why_in_text_and_html():
    view = View.skipped_because("stage 2", "head discovery needs at least 4 checkpoints")
    page = Page()
    page.view(view)
    why = "stage 2 skipped: head discovery needs at least 4 checkpoints"
    assert page.blocks == ['<h2 id="stage2">Stage 2</h2>', f"<p class=note>{why}</p>"]
    assert render_text(view).splitlines()[-1] == why and not page.figures


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
    s1, s2 = study.inflection, study.discovery
    assert FIGURES <= names and names - FIGURES <= OPTIONAL
    passing = bool(s2.stats["passes"].any())
    assert ("ablation" in names) == (passing and "zero" in study.methods)  # a discovered set, zero-ablated
    assert ("qk-edit" in names) == ("seed-ablation" in names) == passing  # the default's own test of that set
    assert ("causal-map" in names) == study.head_map
    no_set, opt_in = (html.escape(t) in text for t in (NO_SET, ZERO_OPT_IN))  # why no zero-ablation chart
    assert (no_set, opt_in) == ((False, False) if "ablation" in names else (not passing, passing))
    for spec in specs.values():
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/v6")
    seed_panels = next(s for f, s in specs.items() if f.endswith("seed-trajectories"))["concat"]
    assert len(seed_panels) == s1.best["seed"].nunique()
    heads = next(s for f, s in specs.items() if f.endswith("seed-heads"))
    counts = pd.DataFrame(next(iter(heads["datasets"].values())))
    assert counts["n_seeds_selecting"].sum() == s2.stats["passes"].sum()
    anchors = {a["id"] for t, a in parsed.tags if t.startswith("h") and "id" in a}
    assert {"stage1", "stage2", "stage3", "stage4", "stage5", "validation", "across", "abstract", "methods",
            "provenance"} <= anchors
    contents = {a["href"][1:] for t, a in parsed.tags if t == "a" and a.get("href", "").startswith("#")}
    assert contents == anchors  # the table of contents links every section, and nothing else
    labels = [a["aria-label"] for t, a in parsed.tags if t == "div" and a.get("role") == "img"]
    assert len(labels) == len(specs) and all(label.startswith("Chart") for label in labels)  # a text alternative each
    said = html.unescape(text)
    assert "lexprobe's offline developmental model organism" in said and "but not EleutherAI's Pythia-14M" in said
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


def test_the_report_dates_its_measurements_not_the_rerun_that_wrote_it():
    from lexprobe.supplement import computed

    stamps = pd.DataFrame({"created": ["2026-12-04T18:07:00+0000", "2026-12-04T20:30:00+0100", None]})
    assert computed(stamps) == "2026-12-04 18:07:00 to 2026-12-04 19:30:00"
    assert computed(stamps.iloc[[2]]).startswith("unknown")


def test_tables_fit_a_reader_constant_keys_in_the_caption_no_empty_pivot_column_wide_ones_split():
    pivot = pd.DataFrame({"seed": [0, 0, 1], "perturbation": ["a", "b", "a"], "r2_clean": [1.0, 2.0, 3.0]}).pivot_table(
        index="seed", columns="perturbation", values="r2_clean").reset_index().assign(model="m1")
    page = Page()
    page.table(pivot, "kept")
    heads = re.findall(r"<th>(.*?)</th>", page.blocks[0])
    assert heads == ["seed", "a", "b"] and "(model: m1)" in page.blocks[0] and pivot.columns.name == "perturbation"
    wide = pd.DataFrame({"seed": [0], "step": [8], **{f"r2_{i}": [0.123456] for i in range(15)}})
    page.table(wide, "wide")
    tables = re.findall(r"<table.*?</table>", page.blocks[1], re.S)
    assert len(tables) == 2 and all(len(re.findall(r"<th>", t)) <= MAX_COLUMNS for t in tables)
    assert all("<th>seed</th>" in t for t in tables) and "R² 0" in tables[0] and "0.123" in tables[0]
    kept = Page()
    kept.table(pd.concat([wide, wide]).assign(model="m1"), "kept", keep=("r2_14", "model"))  # model: in the caption
    first = re.findall(r"<table.*?</table>", kept.blocks[0], re.S)[0]
    assert re.findall(r"<th>(.*?)</th>", first)[:3] == ["seed", "step", "R² 14"]
    with pytest.raises(KeyError, match="r2_99"):
        kept.table(wide, "missing", keep=("r2_99",))
    page.table(pd.DataFrame({"seed": range(MAX_ROWS + 1)}), "long")
    page.table(pd.DataFrame({"seed": range(MAX_ROWS)}), "short")
    assert page.blocks[2].startswith(f"<details><summary>long ({MAX_ROWS + 1} rows)</summary>")
    assert page.blocks[3].startswith("<p><b>short</b></p>")
    page.table(pd.DataFrame({"seed": range(MAX_ROWS + 1)}), "open", collapsed=False)
    assert page.blocks[4].startswith("<p><b>open</b></p>")


def test_a_censored_step_reads_as_the_bound_it_is_and_a_chart_has_words_for_who_cannot_see_it():
    from lexprobe.report.inflection_report import censored_shown
    from lexprobe.views import viz

    inf = pd.DataFrame({"model": "m", "seed": [0, 1], "onset_step": [0.0, 150.0], "onset_censored": [True, False],
                        "saturation_step": [512.0, 300.0], "saturation_censored": [True, False]})
    shown = censored_shown(inf)
    assert list(shown["saturation_step"]) == [">= 512 (censored)", "300"]
    assert list(shown["onset_step"]) == ["<= 0 (censored)", "150"] and inf["saturation_step"].dtype == float
    best = pd.DataFrame({"model": "m", "seed": [0, 0, 1, 1], "step": [0, 8, 0, 8], "r2": [0.0, 0.2, 0.0, 0.3],
                         "best_layer": 1})
    words = viz.text_alternative(viz.spec_of(viz.performance_chart(best)))
    assert words.startswith("Chart: Disambiguation across training") and "y axis: best-layer R²" in words
    assert "colour: seed" in words and "line" in words and "4 data rows" in words
