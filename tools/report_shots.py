"""Screenshots of an HTML report as a reader meets it: headless Chromium (Debian's, driven by Playwright), offline,
one PNG per section (each ``<h2>`` to the next), plus the layout check of the browser tests.

    python tools/report_shots.py .lexprobe/report-organism.html build/shots [--width 1400]

Prints the page's width, each section's file and height, and what reaches past the text column or draws a legend
without a solid swatch (nothing, when the report fits).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.browser.conftest import chromium_path  # noqa: E402  (the browser tests' chromium and checks)
from tests.browser.pages import layout_problems  # noqa: E402

SECTIONS_JS = """
() => [...document.querySelectorAll('h2')].map((h, i, all) => {
  const top = h.getBoundingClientRect().top + window.scrollY;
  const next = all[i + 1] ? all[i + 1].getBoundingClientRect().top + window.scrollY : document.body.scrollHeight;
  return {title: h.innerText, top, height: next - top};
})
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1400)
    args = ap.parse_args()
    if not args.report.is_file():
        ap.error(f"no report at {args.report} (write one with `make run` or `lexprobe report --html FILE`)")
    exe = chromium_path()
    if exe is None:
        ap.error("no chromium: apt-get install chromium, or set LEXPROBE_CHROMIUM")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": 1000})
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
        page.goto(args.report.resolve().as_uri())
        page.wait_for_function("() => document.querySelectorAll('.vega-embed svg').length >= "
                               "document.querySelectorAll('.lexprobe-figure').length", timeout=120_000)
        page.wait_for_load_state("networkidle")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        print(f"{args.report}: {args.report.stat().st_size / 1e6:.1f} MB, page {width} px wide at {args.width} px")
        for i, s in enumerate(page.evaluate(SECTIONS_JS)):
            path = args.out / f"section-{i + 1:02d}.png"
            page.screenshot(path=str(path), full_page=True,
                            clip={"x": 0, "y": s["top"], "width": args.width, "height": max(1, s["height"])})
            print(f"  {path}  {s['title']!r}, {s['height']:.0f} px tall")
        problems = layout_problems(page)
        print("layout: " + ("; ".join(problems) if problems else "every table and chart within the text column, "
                                                                  "every legend with a solid swatch"))
        browser.close()


if __name__ == "__main__":
    main()
