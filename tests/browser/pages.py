"""Reusable browser checks: did vega figures really draw, and does an HTML file render offline without errors.

:func:`assert_html_renders` is the check for any HTML file lexprobe writes (``viz.save(chart, "x.html")``, and the
HTML report when it exists): open it in headless Chromium with every non-file request refused, and assert that each
figure drew marks and that the console stayed free of errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def layout_problems(page) -> list[str]:
    """What scrolls sideways or reaches past the text column, and legends without a solid swatch (see LAYOUT_JS)."""
    return page.evaluate(LAYOUT_JS)


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
    an error, and (``fits``) that nothing reaches past the text column and every legend has a solid swatch."""
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
