"""The executable supplement: all five stages in ONE self-contained HTML file (``lexprobe report``).

Every chart is a Vega-Lite spec in a ``<script type="application/json" class="lexprobe-spec">`` block next to its
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import altair as alt
import pandas as pd

import lexprobe
from lexprobe import report
from lexprobe.base.paths import REPO_ROOT
from lexprobe.base.view import Figure, Heading, Table, Text, View
from lexprobe.checkpoints.suites import Suite
from lexprobe.report.findings import abstract
from lexprobe.stages import STAGES
from lexprobe.stimuli.tables import Stimuli
from lexprobe.study import Study
from lexprobe.views import viz

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
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
"""
RENDER = """
document.querySelectorAll('script.lexprobe-spec').forEach(function (el) {
  vegaEmbed('#' + el.dataset.figure, JSON.parse(el.textContent), {actions: false, renderer: 'svg'})
    .catch(function (err) { document.getElementById(el.dataset.figure).textContent = 'chart error: ' + err; });
});
"""


@dataclass
class Page:
    """An HTML body being built: blocks in order and the figures (id -> Vega-Lite spec) they reference."""

    blocks: list[str] = field(default_factory=list)
    figures: dict[str, dict] = field(default_factory=dict)

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        ident = f' id="{anchor}"' if anchor else ""
        self.blocks.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")

    def text(self, text: str, note: bool = False) -> None:
        self.blocks.append(f'<p{" class=note" if note else ""}>{html.escape(text)}</p>')

    def pre(self, text: str) -> None:
        self.blocks.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, df: pd.DataFrame, caption: str, collapsed: bool = False) -> None:
        """A table as a reader meets it (see :func:`for_reader`); one wider than ``MAX_COLUMNS`` shows its first
        columns, and the rest, beside the columns that name a row, in further tables folded below it."""
        shown, caption = for_reader(df, caption)
        cap = html.escape(caption)
        ids = _leading_ids(shown)
        rest = [c for c in shown.columns if c not in ids]
        width = MAX_COLUMNS - len(ids)
        chunks = [rest[i:i + width] for i in range(0, len(rest), width)] or [[]]
        body = _html_table(shown[ids + chunks[0]])
        if len(chunks) > 1:
            body += (f"<details><summary>{len(rest) - width} more columns</summary>"
                     + "".join(_html_table(shown[ids + c]) for c in chunks[1:]) + "</details>")
        self.blocks.append(f"<details><summary>{cap} ({len(df)} rows)</summary>{body}</details>" if collapsed
                           else f"<p><b>{cap}</b></p>{body}")

    def chart(self, name: str, chart: alt.TopLevelMixin, caption: str) -> None:
        fid = f"fig-{len(self.figures) + 1}-{name}"
        with alt.data_transformers.disable_max_rows():  # the file must hold every row (big suites: big file)
            self.figures[fid] = chart.to_dict()
        self.blocks.append(f'<div class="lexprobe-figure" id="{fid}" data-caption="{html.escape(caption)}"></div>'
                           f"<p class=note>Figure {len(self.figures)}: {html.escape(caption)}</p>")

    def view(self, view: View) -> None:
        """A stage's section: its heading, then its blocks (each figure drawn by the viz function it names)."""
        self.heading(view.title, anchor=view.anchor)
        if view.skipped:
            self.text(view.skipped, note=True)
        for block in view.blocks:
            match block:
                case Text():
                    self.text(block.text, block.note)
                case Table():
                    self.table(block.frame, block.caption, block.collapsed)
                case Figure():
                    self.chart(block.name, getattr(viz, block.chart)(**block.args), block.caption)
                case Heading():
                    self.heading(block.text, anchor=block.anchor)


MAX_COLUMNS = 10  # columns a table shows at once; a wider one folds the rest away
KEY_COLUMNS = ("suite", "stimuli", "condition", "model", "target", "fdr_family")  # said once when constant
WORDS = {"r2": "R²", "auc": "AUC", "se": "SE", "boot": "bootstrap", "q05": "5%", "q95": "95%", "I2": "I²",
         "sd": "SD", "n": "n", "cf": "counterfactual", "attn": "attention", "perm": "permutation"}


def for_reader(df: pd.DataFrame, caption: str) -> tuple[pd.DataFrame, str]:
    """A table's columns in words (``r2_clean`` -> "R² clean"), key columns with one value (the model, the suite)
    moved into the caption instead of repeated on every row."""
    same = [c for c in KEY_COLUMNS if c in df.columns and len(df) > 1 and df[c].nunique(dropna=False) == 1]
    if same:
        caption += " (" + "; ".join(f"{c.replace('_', ' ')}: {df[c].iloc[0]}" for c in same) + ")"
    out = df.drop(columns=same).rename_axis(columns=None)  # a pivot's axis name would head an empty first column
    return out.rename(columns={c: " ".join(WORDS.get(w, w) for w in str(c).split("_")) for c in out.columns}), caption


def _leading_ids(df: pd.DataFrame, most: int = 4) -> list[str]:
    """The leading columns that name a row (seed, step, layer, ...): the first ones that are not floats."""
    ids: list[str] = []
    for c in list(df.columns)[:most]:
        if pd.api.types.is_float_dtype(df[c]):
            break
        ids.append(c)
    return ids


def _number(v: float) -> str:
    """Three significant digits; whole numbers from 1,000 up (steps) in full, with separators."""
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _html_table(df: pd.DataFrame) -> str:
    return f'<div class="table-wrap">{df.to_html(index=False, na_rep="–", float_format=_number, border=0)}</div>'


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
    """The HTML supplement of ``study``: the abstract (each stage's leading finding), then every registered stage's
    view in order (a skipped stage says why), then the provenance."""
    page = Page()
    s1 = study.inflection
    title = f"lexprobe supplement: {s1.suite.name}"
    page.heading(title, level=1)
    page.text(f"{s1.best['model'].nunique()} model(s), {s1.best['seed'].nunique()} seed(s), "
              f"{s1.best['step'].nunique()} checkpoints; stimuli {s1.stimuli.name} ({len(s1.stimuli.pairs)} pairs). "
              "Every chart is embedded in this file and renders without network access.")
    page.heading("Abstract", level=2, anchor="abstract")
    page.text(abstract({name: report.findings_of(study, name) for name in STAGES})
              + " Each stage below opens with its findings, generated from its tables.")
    for name in STAGES:
        page.view(report.view(study, name))
    _provenance(page, s1.suite, s1.stimuli, commits, command)
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
