"""Every notebook, run in a real JupyterLab in headless Chromium (smoke mode): no errors, every chart drawn, and it
reads as rich output (no view printed as terminal text, nothing past the column).

Which cells must show a chart is asked of the kernel (IPython's ``Out`` holds each cell's displayed value), not of
the page, so a chart that fails to render cannot also hide from the check; a cell that shows a stage's view must draw
as many charts as the captions its HTML (written by Python) numbers. Notebook 02 also has its widgets driven:
choosing another head in the inspector and clicking another head in the heatmap must redraw the charts.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import NOTEBOOKS
from .pages import Figure, assert_drawn, figures, reading_problems, screenshot

RUN_TIMEOUT_MS = 600_000

CURRENT = "window.jupyterapp.shell.currentWidget"
KERNEL = f"{CURRENT}.sessionContext.session.kernel"

# Out[n] holds what cell [n] displayed: an altair chart, or an ipywidgets.interactive whose result is one
CHART_CELLS = """__import__("json").dumps({"prefix": __import__("sys").prefix, "charts": sorted(
    n for n, v in Out.items()
    if isinstance(v, __import__("altair").TopLevelMixin)
    or isinstance(getattr(v, "result", None), __import__("altair").TopLevelMixin))})"""

ASK_KERNEL_JS = f"""async (expr) => {{
  const reply = await {KERNEL}.requestExecute(
      {{code: '', silent: true, store_history: false, user_expressions: {{out: expr}}}}).done;
  return reply.content.user_expressions.out;
}}"""

# Per code cell: error outputs in the notebook model, and error text rendered anywhere in its output area, including
# inside widgets (an exception in an ipywidgets callback only shows there). stderr that is not an error (a warning)
# does not count.
ERRORS_JS = f"""() => {CURRENT}.content.widgets.filter((c) => c.model.type === 'code').map((c) => ({{
  count: c.model.executionCount,
  model: c.model.outputs.toJSON().filter((o) => o.output_type === 'error').map((o) => o.ename + ': ' + o.evalue),
  shown: [...c.node.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map((e) => e.innerText).filter((t) => /Traceback|\\b\\w*(Error|Exception)\\b/.test(t)).map((t) => t.slice(0, 600)),
}})).filter((c) => c.model.length || c.shown.length)"""

# Per code cell that shows a stage's view (lexprobe.views.html.show): how many figures its captions number
VIEW_CELLS_JS = f"""() => {CURRENT}.content.widgets.filter((c) => c.model.type === 'code'
                                                               && c.node.querySelector('.lexprobe-view'))
  .map((c) => ({{count: c.model.executionCount, figures: [...c.node.querySelectorAll('.lexprobe-view p.note')]
    .filter((p) => /^Figure \\d+: /.test(p.innerText)).length}}))"""


def notebooks() -> list[str]:
    return sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def open_notebook(browser, lab, name: str, problems: list[str]):
    """Open a notebook in a fresh JupyterLab workspace; console errors and any request leaving localhost (which
    is refused: the machine is offline) land in ``problems``."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("console", lambda m: problems.append(f"console error: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    def offline(route) -> None:
        if route.request.url.startswith(f"http://127.0.0.1:{lab.port}/"):
            route.continue_()
        else:
            problems.append(f"request to the network: {route.request.url}")
            route.abort()

    page.route("**/*", offline)
    page.goto(lab.url(name))
    page.wait_for_function(f"() => window.jupyterapp && {CURRENT} && {CURRENT}.sessionContext "
                           f"&& {CURRENT}.context.path === {json.dumps(name)}", timeout=60_000)
    page.wait_for_function(f"() => {CURRENT}.sessionContext.session?.kernel?.status === 'idle'", timeout=120_000)
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    return page


def run_all(page) -> None:
    """Run > Run All Cells, then wait until every code cell has run and the kernel is idle."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(f"""() => {KERNEL}.status === 'idle' && {CURRENT}.content.widgets
        .filter((c) => c.model.type === 'code').every((c) => c.model.executionCount !== null
                                                        && !c.node.querySelector('.jp-mod-pending'))""",
                           timeout=RUN_TIMEOUT_MS, polling=500)


def assert_no_errors(page, where: str) -> None:
    bad = page.evaluate(ERRORS_JS)
    assert not bad, f"{where}: " + "; ".join(f"cell [{c['count']}] shows {c['model'] or c['shown']}" for c in bad)


def cell_node(page, count: int):
    """The DOM node of the code cell that ran as [count]."""
    return page.evaluate_handle(f"(n) => {CURRENT}.content.widgets.find((c) => c.model.executionCount === n).node",
                                count)


def cell_figures(page, count: int) -> list[Figure]:
    """The vega figures drawn in the output of the code cell that ran as [count]."""
    return figures(cell_node(page, count))


def wait_drawn(page, count: int, timeout_s: float = 60, expected: int = 1) -> list[Figure]:
    """Charts draw asynchronously (widget comm + vega): poll until the cell shows ``expected`` figures, all with
    marks."""
    figs: list[Figure] = []
    for _ in range(int(timeout_s * 2)):
        figs = cell_figures(page, count)
        if len(figs) >= expected and all(f.drawn for f in figs):
            return figs
        page.wait_for_timeout(500)
    return figs


@dataclass
class Ran:
    """A notebook run to its end in JupyterLab: its name, its page and what went wrong in the browser meanwhile."""

    name: str
    page: Any
    problems: list[str]


@pytest.fixture(scope="module", params=notebooks())
def ran(request, browser, lab, shot_dir) -> Iterator[Ran]:
    """Each notebook opened and run once for the tests below; afterwards a screenshot of what a person would see
    (also, above all, when a check failed)."""
    problems: list[str] = []
    page = open_notebook(browser, lab, request.param, problems)
    try:
        run_all(page)
        yield Ran(request.param, page, problems)
    finally:
        fit_notebook(page)
        screenshot(page, shot_dir / f"{request.param.removesuffix('.ipynb')}.png")
        page.evaluate(f"() => {CURRENT}.sessionContext.shutdown()")  # free the kernel for the next notebook
        page.close()


def test_notebook_runs_and_draws_every_chart(ran):
    name, page = ran.name, ran.page
    assert_no_errors(page, name)
    out = page.evaluate(ASK_KERNEL_JS, CHART_CELLS)
    assert out["status"] == "ok", f"{name}: asking the kernel failed: {out}"
    info = json.loads(ast.literal_eval(out["data"]["text/plain"]))
    assert info["prefix"] == sys.prefix, f"{name} ran in {info['prefix']}, not this environment ({sys.prefix})"
    views = {c["count"]: c["figures"] for c in page.evaluate(VIEW_CELLS_JS)}
    assert info["charts"] or any(views.values()), f"{name}: no cell displayed a chart or a view with figures"
    for n in info["charts"]:
        shown = cell_node(page, n).evaluate("(c) => c.querySelector('.jp-OutputArea')?.innerText.slice(0, 300)")
        assert_drawn(wait_drawn(page, n), f"{name} cell [{n}], whose output reads {shown!r}")
    for n, expected in views.items():
        if expected:
            assert_drawn(wait_drawn(page, n, expected=expected), f"{name} cell [{n}] (a stage's view)", expected)
    assert_drawn(figures(page.locator(".jp-Notebook").first), f"{name} (every figure on the page)")
    if name.startswith("02_"):
        check_head_explorer(page)
        check_inspector(page)
        assert_no_errors(page, name + " after driving its widgets")
    assert not ran.problems, f"{name}: " + "; ".join(ran.problems)


def test_notebook_reads_as_rich_output(ran):
    """No stage's view printed as the terminal's text (a table as aligned text, a "[figure: ...]" line), and no
    table or chart reaching past the notebook's column (a wide table scrolls in a wrapper of its own, or folds)."""
    problems = reading_problems(ran.page.locator(".jp-Notebook").first)
    assert not problems, f"{ran.name}: " + "; ".join(problems)


def fit_notebook(page) -> None:
    """Make the window as tall as the notebook, scrolled to its top, so that one screenshot shows every cell."""
    page.mouse.move(0, 0)  # no tooltip left over from the clicks
    height = page.evaluate(f"() => {CURRENT}.content.node.querySelector('.jp-WindowedPanel-viewport').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 200, 15_000)})
    page.evaluate(f"() => {CURRENT}.content.node.querySelector('.jp-WindowedPanel-outer').scrollTo(0, 0)")
    page.wait_for_timeout(500)


def check_head_explorer(page) -> None:
    """Clicking another head in the heatmap selects it and redraws the trajectory chart below (vega selection)."""
    cell = page.locator(".jp-CodeCell").filter(
        has=page.locator(".vega-embed svg", has_text=re.compile(r"\(click a head\)")))
    assert cell.count() == 1, "notebook 02: no head explorer chart ('click a head') found"
    rects = cell.locator(".vega-embed svg g.mark-rect.role-mark path")
    lines = cell.locator(".vega-embed svg g.mark-line.role-mark path")
    opacity = rects.evaluate_all("(els) => els.map((e) => e.getAttribute('opacity'))")
    assert opacity.count("1") == 1, f"notebook 02: one head should start selected, opacities {opacity}"
    before = lines.evaluate_all("(els) => els.map((e) => e.getAttribute('d'))")
    assert before, "notebook 02: the selected head's trajectory is not drawn"
    target = next(i for i, o in enumerate(opacity) if o != "1")
    rects.nth(target).scroll_into_view_if_needed()
    box = rects.nth(target).bounding_box()  # click where a person would; off-centre: a passing head's star
    page.mouse.click(box["x"] + box["width"] / 4, box["y"] + box["height"] / 4)  # sits in the middle
    for _ in range(40):
        after = lines.evaluate_all("(els) => els.map((e) => e.getAttribute('d'))")
        if after and after != before:
            break
        page.wait_for_timeout(250)
    assert after and after != before, "notebook 02: clicking another head did not change the trajectory chart"
    assert rects.nth(target).get_attribute("opacity") == "1", "notebook 02: the clicked head is not selected"


def check_inspector(page) -> None:
    """The inspector's dials exist, and choosing another head redraws its chart for that head."""
    box = page.locator(".widget-interact").first
    labels = set(box.locator(".widget-label").all_inner_texts())
    assert {"seed", "step", "layer", "head", "sentence"} <= labels, f"inspector dials missing: {labels}"
    head = box.locator(".widget-dropdown").filter(has=page.locator("label", has_text=re.compile(r"^head$")))
    select = head.locator("select")
    current = select.evaluate("(s) => s.options[s.selectedIndex].text")
    other = next(o for o in select.locator("option").all_inner_texts() if o != current)
    out = page.locator(".widget-interact .widget-output").first
    before = figures(out)
    assert_drawn(before, "notebook 02 inspector")
    assert f"H{current} at step" in before[0].svg
    select.select_option(label=other)
    for _ in range(120):
        after = figures(out)
        if after and all(f.drawn for f in after) and [f.svg for f in after] != [f.svg for f in before]:
            break
        page.wait_for_timeout(500)
    assert_drawn(after, f"notebook 02 inspector after choosing head {other}, whose output reads "
                        f"{out.inner_text()[:400]!r}")
    assert [f.svg for f in after] != [f.svg for f in before], "choosing another head did not change the chart"
    assert f"H{other} at step" in after[0].svg, f"the inspector's chart does not show head {other}"


def test_reading_check_fails_on_a_view_printed_as_text(browser, tmp_path, monkeypatch):
    """The reading check is not blind. In nbconvert's HTML of a notebook, a view printed as the terminal's text (as
    notebooks 03-06 did before) fails it, and so does a table wider than the column with no wrapper of its own; the
    same view shown by ``show`` passes."""
    import nbformat
    import pandas as pd
    from nbconvert import HTMLExporter

    from lexprobe.base.view import Figure as ViewFigure
    from lexprobe.base.view import Table, Text, View
    from lexprobe.views.html import show
    from lexprobe.views.text import render_text

    wide = pd.DataFrame({f"column_{i}": [0.123456, 1.5] for i in range(30)}).assign(seed=[0, 1])
    view = View("Stage 9 · A made-up stage", "stage9", (
        Text("Findings. Something rises."),
        ViewFigure("layer_chart", {"perf": pd.DataFrame({"step": [0, 1], "layer": [0, 0], "r2": [0.1, 0.2]})},
                   "score per layer", "layers"),
        Table(wide[["seed", "column_0", "column_1"]], "Scores per seed"), Table(wide, "Every column")))
    shown: list = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
    show(view)
    new = nbformat.v4
    nb = new.new_notebook(cells=[
        new.new_code_cell("print(render_text(v))", execution_count=1,
                          outputs=[new.new_output("stream", name="stdout", text=render_text(view))]),
        new.new_code_cell("wide", execution_count=2,
                          outputs=[new.new_output("display_data", data={"text/html": wide.to_html()})]),
        new.new_code_cell("show(v)", execution_count=3,
                          outputs=[new.new_output("display_data", data={"text/html": o.data})
                                   for o in shown if hasattr(o, "data")])])
    path = tmp_path / "notebook.html"
    path.write_text(HTMLExporter().from_notebook_node(nb)[0], encoding="utf-8")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    try:
        page.goto(path.as_uri())
        problems = reading_problems(page.locator("body"))
    finally:
        page.close()
    cell = {n: " ".join(p for p in problems if f"[{n}]:" in p) for n in (1, 2, 3)}
    assert "a figure placeholder" in cell[1] and "a table as text" in cell[1], problems
    assert "a table" in cell[2] and "past the column" in cell[2], problems
    assert not cell[3], problems
