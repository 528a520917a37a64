"""The executable supplement: all five stages in ONE self-contained HTML file (``lexprobe report``).

Each stage's view is rendered as the notebooks render it (:class:`lexprobe.views.html.Page`). Every chart is a
Vega-Lite spec in a ``<script type="application/json" class="lexprobe-spec">`` block next to its
``<div class="lexprobe-figure">``; one inline copy of the Vega / Vega-Lite / vega-embed bundle (from
``vl-convert-python``, the bundle altair's own ``inline=True`` export uses) renders them, so the file opens with no
network. Tables are plain HTML; a provenance section records versions, the suite, resolved commits, the stimuli
hash and the exact command.
"""

from __future__ import annotations

import html
import json
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

import lexprobe
from lexprobe import report
from lexprobe.base.paths import REPO_ROOT
from lexprobe.checkpoints.suites import Suite
from lexprobe.report.across import across, conclusion
from lexprobe.report.across import view as across_view
from lexprobe.report.findings import abstract
from lexprobe.report.front_matter import example_stimuli, glossary, methods, organism_words
from lexprobe.stages import STAGES
from lexprobe.stimuli.tables import Stimuli
from lexprobe.study import Study
from lexprobe.views.html import Page

LIBRARIES = ("torch", "transformers", "nnsight", "numpy", "pandas", "scipy", "statsmodels", "ruptures", "altair",
             "vl-convert-python", "pyarrow")
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.2em; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; overflow-wrap: break-word; }
th { background: #f2f2f2; }
.lexprobe-figure { margin: 1em 0 2em; }
.note { color: #555; font-style: italic; }
nav.contents ul { list-style: none; padding-left: 1em; margin: 0.3em 0 1em; columns: 2; }
"""
RENDER = """
document.querySelectorAll('script.lexprobe-spec').forEach(function (el) {
  vegaEmbed('#' + el.dataset.figure, JSON.parse(el.textContent), {actions: false, renderer: 'svg'})
    .catch(function (err) { document.getElementById(el.dataset.figure).textContent = 'chart error: ' + err; });
});
"""


def _script_json(obj: object) -> str:
    """JSON safe inside a <script> element (no '</' that could close it)."""
    return json.dumps(obj).replace("</", "<\\/")


def vega_bundle() -> str:
    """Vega, Vega-Lite (the version altair writes) and vega-embed as one inline script, from vl-convert."""
    import vl_convert
    from altair.utils._importers import vl_version_for_vl_convert

    # vl-convert's stub marks ``snippet`` required; it defaults (to the snippet that sets window.vegaEmbed etc.)
    bundle = vl_convert.javascript_bundle(vl_version=vl_version_for_vl_convert())  # type: ignore[call-arg]
    return bundle.replace("</script", "<\\/script")


def document(title: str, page: Page) -> str:
    """The whole self-contained HTML file."""
    specs = "\n".join(f'<script type="application/json" class="lexprobe-spec" data-figure="{fid}">'
                      f"{_script_json(spec)}</script>" for fid, spec in page.figures.items())
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}"
            f"</title>\n<style>{STYLE}</style>\n<script>{vega_bundle()}</script>\n</head>\n<body>\n"
            + "\n".join(page.blocks) + f"\n{specs}\n<script>{RENDER}</script>\n</body>\n</html>\n")


def _versions() -> pd.DataFrame:
    rows = [{"package": "lexprobe", "version": lexprobe.__version__}, {"package": "python",
                                                                          "version": platform.python_version()}]
    for name in LIBRARIES:
        try:
            rows.append({"package": name, "version": version(name)})
        except PackageNotFoundError:
            rows.append({"package": name, "version": "not installed"})
    return pd.DataFrame(rows)


def _source_commit() -> str:
    """The git commit of the lexprobe source tree (``+dirty`` with uncommitted changes), or 'unknown'."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def computed(commits: pd.DataFrame) -> str:
    """When the measurements behind a report were made: the first and last unit's timestamps, in UTC."""
    stamps = pd.to_datetime(commits["created"].dropna(), format="%Y-%m-%dT%H:%M:%S%z", utc=True)
    if stamps.empty:
        return "unknown (units stored before timestamps were kept)"
    return f"{stamps.min():%Y-%m-%d %H:%M:%S} to {stamps.max():%Y-%m-%d %H:%M:%S}"


def _provenance(page: Page, suite: Suite, stimuli: Stimuli, commits: pd.DataFrame, command: str) -> None:
    page.heading("Provenance", anchor="provenance")
    page.table(pd.DataFrame([
        {"item": "command", "value": command},
        {"item": "measurements computed (UTC)", "value": computed(commits)},
        {"item": "this file written (UTC)", "value": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")},
        {"item": "lexprobe source commit", "value": _source_commit()},
        {"item": "platform", "value": platform.platform()},
        {"item": "suite", "value": suite.name},
        {"item": "suite identity", "value": json.dumps(suite.identity(), sort_keys=True)},
        {"item": "models / seeds / steps", "value": f"{', '.join(suite.models)} / {list(suite.seeds)} / "
                                                    f"{len(suite.steps)} steps {list(suite.steps)}"},
        {"item": "suite metadata", "value": json.dumps(suite.metadata, sort_keys=True, default=str)},
        {"item": "stimuli", "value": f"{stimuli.name}: {len(stimuli.pairs)} pairs, "
                                     f"{len(stimuli.sentences)} sentences, content hash {stimuli.hash}"},
    ]), "Run")
    page.table(_versions(), "Versions")
    page.table(commits.drop(columns="created"), "Resolved commit and weights hash of every checkpoint (intact "
                                                "condition)", collapsed=True)


def supplement(study: Study, commits: pd.DataFrame, command: str) -> str:
    """The HTML supplement of ``study``: what the model is, the contents, the abstract (each stage's headline
    findings and the conclusion), the methods, glossary and example stimuli, every registered stage's view in order
    (a skipped stage says why), the stages joined per head, then the provenance."""
    page = Page()
    s1 = study.inflection
    outcomes = {name: study.outcome(name) for name in STAGES}
    joined = across(outcomes)
    said = {name: report.findings_of(study, name) for name in STAGES}
    title = f"lexprobe supplement: {s1.suite.name}"
    page.heading(title, level=1)
    page.text(f"{s1.best['model'].nunique()} model(s), {s1.best['seed'].nunique()} seed(s), "
              f"{s1.best['step'].nunique()} checkpoints; stimuli {s1.stimuli.name} ({len(s1.stimuli.pairs)} pairs). "
              "Every chart is embedded in this file and renders without network access.")
    page.text(organism_words(s1.suite))
    contents = len(page.blocks)
    page.heading("Abstract", level=2, anchor="abstract")
    page.text(abstract({**said, "across": conclusion(joined) if joined else []})
              + " Each stage below opens with its findings, generated from its tables; the section after the stages "
                "follows each head through all of them.")
    page.heading("Methods, terms and stimuli", level=2, anchor="methods")
    page.table(methods(study), "Methods box: what each stage computes (draws and counts from this study's "
                               "settings)", collapsed=False)
    page.table(glossary(), "Glossary", collapsed=False)
    page.table(example_stimuli(outcomes), "Example stimuli: a sentence intact, under each perturbation and control "
                                          "(stage 3), and as its counterfactual (stage 4)", collapsed=False)
    for name in STAGES:
        page.view(report.view(study, name))
    page.view(across_view(joined))
    _provenance(page, s1.suite, s1.stimuli, commits, command)
    page.blocks.insert(contents, page.contents())
    return document(title, page)


def write_report(study: Study, out: str | Path, command: str | None = None) -> Path:
    """Run (or reuse from the results store) every stage of ``study`` and write the supplement to ``out``."""
    s1 = study.inflection
    commits = study.store.provenance(suite=s1.suite.name, stimuli=s1.stimuli.name, condition=s1.condition)
    text = supplement(study, commits[["model", "seed", "step", "commit", "weights_hash", "created"]],
                      command or shlex.join(["lexprobe", *sys.argv[1:]]))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
