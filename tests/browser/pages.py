"""Reusable browser checks: did vega figures really draw, does an HTML file render offline without errors, and does a
notebook read as rich output.

:func:`assert_html_renders` is the check for any HTML file lexprobe writes (``viz.save(chart, "x.html")``, and the
HTML report when it exists): open it in headless Chromium with every non-file request refused, and assert that each
figure drew marks and that the console stayed free of errors. :func:`reading_problems` is the check for a notebook's
outputs, in JupyterLab or in nbconvert's HTML export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lexprobe.views import viz

SHOTS: list[Path] = []  # screenshots taken in this run, listed at the end of the pytest report


def screenshot(page, path: Path, full: bool = True) -> Path:
    """Save a PNG of the page and list it in the pytest report."""
    page.screenshot(path=str(path), full_page=full)
    SHOTS.append(path)
    return path


# For every vega-embed container under a root element: the SVG's data marks (vega puts them in `.role-mark`
# groups; axes, legends and titles have other roles), or for a canvas whether any pixel is painted.
FIGURES_JS = """
(root) => [...root.querySelectorAll('.vega-embed')].map((el) => {
  const svg = el.querySelector('svg');
  const canvas = el.querySelector('canvas');
  let inked = false;
  if (canvas && canvas.width && canvas.height) {
    const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < px.length; i += 4) { if (px[i] !== 0) { inked = true; break; } }
  }
  return {svg: svg ? svg.outerHTML : null, marks: svg ? svg.querySelectorAll('.role-mark > *').length : 0,
          canvas: !!canvas, inked, text: el.innerText.slice(0, 300)};
})
"""


# What a reader would see sideways or cannot read: the page wider than the window, a table or a chart reaching past
# the text column (the body's content box), a legend whose swatches are all translucent.
LAYOUT_JS = """
() => {
  const cs = getComputedStyle(document.body), box = document.body.getBoundingClientRect();
  const right = box.right - parseFloat(cs.paddingRight) + 1;
  const out = [];
  const page = document.documentElement.scrollWidth;
  if (page > window.innerWidth) out.push(`the page is ${page} px wide in a ${window.innerWidth} px window`);
  document.querySelectorAll('table, .lexprobe-figure svg').forEach((el) => {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > right) {
      const fig = el.closest('.lexprobe-figure');
      const wrap = el.closest('.table-wrap');
      const cap = wrap && wrap.previousElementSibling ? wrap.previousElementSibling.innerText.slice(0, 80) : 'a table';
      out.push(`${fig ? fig.id : cap}: ${Math.round(r.width)} px wide, ${Math.round(r.right - right)} px past ` +
               'the text column');
    }
  });
  document.querySelectorAll('.lexprobe-figure').forEach((fig) => {
    fig.querySelectorAll('.role-legend').forEach((legend) => {
      const symbols = [...legend.querySelectorAll('.role-legend-symbol path')];
      const solid = symbols.some((p) => {
        const s = getComputedStyle(p);
        const fill = s.fill !== 'none' ? parseFloat(s.fillOpacity) : 0;
        const stroke = s.stroke !== 'none' ? parseFloat(s.strokeOpacity) : 0;
        return parseFloat(s.opacity) * Math.max(fill, stroke) >= 0.99;
      });
      if (symbols.length && !solid) out.push(`${fig.id}: a legend with no solid swatch`);
    });
  });
  return out;
}
"""


# The report's figures: id -> Vega-Lite spec (the supplement keeps each in a script beside its figure's div).
SPECS_JS = """
() => Object.fromEntries([...document.querySelectorAll('script.lexprobe-spec')]
  .map((el) => [el.dataset.figure, JSON.parse(el.textContent)]))
"""
# Of the figures given by id, those whose drawn SVG has no legend (vega draws one in a `.role-legend` group).
UNLEGENDED_JS = "(ids) => ids.filter((id) => !document.querySelector(`#${CSS.escape(id)} svg .role-legend`))"


def layout_problems(page) -> list[str]:
    """What scrolls sideways or reaches past the text column, legends without a solid swatch (see LAYOUT_JS), and
    figures that colour several series (:func:`lexprobe.views.viz.colour_legends` of their spec) but draw no
    legend."""
    several = [fid for fid, spec in page.evaluate(SPECS_JS).items()
               if any(n > 1 for _, n, _ in viz.colour_legends(spec))]
    return page.evaluate(LAYOUT_JS) + [f"{fid}: several colour series and no legend"
                                       for fid in page.evaluate(UNLEGENDED_JS, several)]


# Per output of a notebook (JupyterLab's page and nbconvert's HTML export share these classes), what its reader should
# not meet: the terminal's rendering of a view (a figure placeholder; a table as aligned text: two lines of 3+ words in
# a row where 3+ words, and half of the shorter line's, end in the same character columns, as right-aligned columns
# do), and a table, chart or picture reaching past the output's column, unless a wrapper of its own inside the output
# scrolls it sideways (JupyterLab's output area scrolls anything: that does not count).
READING_JS = r"""
(root) => {
  const out = [];
  const where = (o) => {
    const prompt = o.closest('.jp-Cell')?.querySelector('.jp-InputPrompt');
    return prompt ? `cell ${prompt.innerText.trim().replace(/:$/, '')}` : 'an output';
  };
  const wrapped = (el, o, right) => {
    for (let a = el.parentElement; a && a !== o; a = a.parentElement) {
      const x = getComputedStyle(a).overflowX;
      if ((x === 'auto' || x === 'scroll') && a.getBoundingClientRect().right <= right) return true;
    }
    return false;
  };
  root.querySelectorAll('.jp-OutputArea-output').forEach((o) => {
    const text = o.innerText;
    const placeholder = text.match(/\[figure: [^\n]*/);
    if (placeholder) out.push(`${where(o)}: a figure placeholder ${JSON.stringify(placeholder[0].slice(0, 80))}`);
    if (/stdout|stderr|text\/plain/.test(o.dataset.mimeType || '')) {
      const lines = text.split('\n');
      const ends = lines.map((line) => [...line.matchAll(/\S+/g)].map((m) => m.index + m[0].length));
      const at = ends.findIndex((a, i) => {
        const b = ends[i + 1] || [];
        const shared = a.filter((e) => b.includes(e)).length;
        return a.length >= 3 && b.length >= 3 && shared >= 3 && shared >= Math.min(a.length, b.length) / 2;
      });
      if (at >= 0) out.push(`${where(o)}: a table as text: ${JSON.stringify(lines[at].slice(0, 80))}`);
    }
    const right = o.getBoundingClientRect().right + 1;
    o.querySelectorAll('table, svg, canvas, img, pre').forEach((el) => {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.right > right && !wrapped(el, o, right)) {
        out.push(`${where(o)}: a ${el.tagName.toLowerCase()} ${Math.round(r.right - right)} px past the column`);
      }
    });
  });
  return out;
}
"""


def reading_problems(target) -> list[str]:
    """What the reader of the notebook in ``target`` (a Locator or ElementHandle) should not meet (see READING_JS)."""
    return target.evaluate(READING_JS)


@dataclass
class Figure:
    svg: str | None
    marks: int
    canvas: bool
    inked: bool
    text: str

    @property
    def drawn(self) -> bool:
        return self.marks > 0 or (self.canvas and self.inked)


def figures(target) -> list[Figure]:
    """Every vega figure inside ``target`` (a Playwright Locator or ElementHandle)."""
    return [Figure(**f) for f in target.evaluate(FIGURES_JS)]


def assert_drawn(figs: list[Figure], where: str, expected: int | None = None) -> None:
    """At least one figure (or exactly ``expected``), each with marks."""
    assert figs, f"{where}: no vega figure rendered"
    if expected is not None:
        assert len(figs) == expected, f"{where}: {len(figs)} vega figures, expected {expected}"
    for i, f in enumerate(figs):
        assert f.drawn, f"{where}: figure {i} drew no marks (svg={f.svg is not None}, canvas={f.canvas}); " \
                        f"it shows: {f.text!r}"


def assert_html_renders(browser, path: Path, expected: int | None = None, shot: Path | None = None,
                        timeout_ms: float = 20_000, width: int = 1200, fits: bool = False) -> list[Figure]:
    """Open an HTML file offline in headless Chromium ``width`` px wide; assert every figure drew and nothing logged
    an error, and (``fits``) that nothing reaches past the text column, every legend has a solid swatch and every
    figure with several colour series has a legend."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    def offline(route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            problems.append(f"request to the network: {route.request.url}")
            route.abort()

    page.route("**/*", offline)
    try:
        page.goto(Path(path).resolve().as_uri())
        try:
            page.wait_for_function("() => document.querySelector('.vega-embed svg, .vega-embed canvas')",
                                   timeout=timeout_ms)
        except Exception:  # noqa: BLE001 - report what the page shows instead of a bare timeout
            raise AssertionError(f"{path}: no vega figure appeared in {timeout_ms / 1000:.0f} s; page says "
                                 f"{page.inner_text('body')[:300]!r}; problems: {problems}") from None
        page.wait_for_load_state("networkidle")
        figs = figures(page.locator("body"))
        if fits:
            problems += layout_problems(page)
        if shot is not None:
            screenshot(page, shot)
    finally:
        page.close()
    assert not problems, f"{path}: " + "; ".join(problems)
    assert_drawn(figs, str(path), expected)
    return figs
