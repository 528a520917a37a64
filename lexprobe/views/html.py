"""A stage's :class:`~lexprobe.base.view.View` as HTML, one rendering for the supplement and the notebooks.

A :class:`Page` turns blocks into HTML: tables in words, wide ones split and folded, long ones folded, and every
figure an empty ``<div>`` (a :class:`Slot`) with its Vega-Lite spec kept aside. The supplement
(:mod:`lexprobe.supplement`) draws the specs with one inline Vega bundle; a notebook (:func:`show`) draws each as an
offline chart widget in its slot's place.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import altair as alt
import pandas as pd

from lexprobe.base.view import Block, Figure, Heading, Table, Text, View
from lexprobe.views import viz

MAX_COLUMNS = 10  # columns a table shows at once; a wider one folds the rest away
MAX_ROWS = 20  # rows a table shows unfolded; a longer one is folded under its caption
KEY_COLUMNS = ("suite", "stimuli", "condition", "model", "target", "fdr_family")  # said once when constant
WORDS = {"r2": "R²", "auc": "AUC", "se": "SE", "boot": "bootstrap", "q05": "5%", "q95": "95%", "I2": "I²",
         "sd": "SD", "n": "n", "cf": "counterfactual", "attn": "attention", "perm": "permutation"}
# a notebook shows a view in JupyterLab's own table style; only what the page's classes mean, scoped to the view
NOTEBOOK_STYLE = ("<style>.lexprobe-view .table-wrap { overflow-x: auto; } "
                  ".lexprobe-view .note { font-style: italic; opacity: 0.8; } "
                  ".lexprobe-view summary { cursor: pointer; margin: 0.3em 0; }</style>")


class Slot(str):
    """A figure's empty ``<div class="lexprobe-figure">`` in a page, knowing the id (``fid``) of the figure drawn
    into it."""

    fid: str

    def __new__(cls, fid: str, caption: str, alt_text: str = "") -> Slot:
        div = f'<div class="lexprobe-figure" id="{fid}" data-caption="{html.escape(caption)}"></div>'
        # the text alternative on a wrapper: vega-embed rewrites its own container's aria-label
        slot = super().__new__(cls, f'<div role="img" aria-label="{html.escape(alt_text)}">{div}</div>' if alt_text
                               else div)
        slot.fid = fid
        return slot


@dataclass
class Page:
    """An HTML body being built: blocks in order and the figures (id -> Vega-Lite spec) their slots hold."""

    blocks: list[str] = field(default_factory=list)
    figures: dict[str, dict] = field(default_factory=dict)
    sections: list[tuple[int, str, str]] = field(default_factory=list)  # (level, text, anchor) of anchored headings

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        ident = f' id="{anchor}"' if anchor else ""
        if anchor:
            self.sections.append((level, text, anchor))
        self.blocks.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")

    def contents(self) -> str:
        """The table of contents: a link to every anchored heading so far, sub-sections indented."""
        items = "".join(f'<li style="margin-left:{(level - 2) * 1.5}em"><a href="#{anchor}">{html.escape(text)}</a>'
                        "</li>" for level, text, anchor in self.sections)
        return f'<nav class="contents" aria-label="Contents"><b>Contents</b><ul>{items}</ul></nav>'


    def text(self, text: str, note: bool = False) -> None:
        self.blocks.append(f'<p{" class=note" if note else ""}>{html.escape(text)}</p>')

    def table(self, df: pd.DataFrame, caption: str, collapsed: bool | None = None, keep: tuple[str, ...] = ()) -> None:
        """A table as a reader meets it (see :func:`for_reader`); one wider than ``MAX_COLUMNS`` shows its first
        columns (the ``keep`` ones first: those a finding quotes), and the rest, beside the columns that name a row,
        in further tables folded below it; one longer than ``MAX_ROWS`` (unless ``collapsed`` is False), or
        ``collapsed``, is folded under its caption; an empty one is its caption alone."""
        shown, caption = for_reader(kept_first(df, keep), caption)
        cap = html.escape(caption)
        if df.empty:
            self.blocks.append(f"<p><b>{cap}</b> (no rows)</p>")
            return
        ids = _leading_ids(shown)
        rest = [c for c in shown.columns if c not in ids]
        width = MAX_COLUMNS - len(ids)
        chunks = [rest[i:i + width] for i in range(0, len(rest), width)] or [[]]
        body = _html_table(shown[ids + chunks[0]])
        if len(chunks) > 1:
            body += (f"<details><summary>{len(rest) - width} more columns</summary>"
                     + "".join(_html_table(shown[ids + c]) for c in chunks[1:]) + "</details>")
        self.blocks.append(f"<details><summary>{cap} ({len(df)} rows)</summary>{body}</details>"
                           if collapsed or (collapsed is None and len(df) > MAX_ROWS) else f"<p><b>{cap}</b></p>{body}")

    def chart(self, name: str, chart: alt.TopLevelMixin, caption: str) -> None:
        fid = f"fig-{len(self.figures) + 1}-{name}"
        spec = self.figures[fid] = viz.spec_of(chart)  # the page must hold every row (big suites: big page)
        self.blocks += [Slot(fid, caption, viz.text_alternative(spec)),
                        f"<p class=note>Figure {len(self.figures)}: {html.escape(caption)}</p>"]

    def view(self, view: View) -> None:
        """A stage's section: its heading, then its blocks."""
        self.heading(view.title, anchor=view.anchor)
        if view.skipped:
            self.text(view.skipped, note=True)
        for block in view.blocks:
            self.block(block)

    def block(self, block: Block) -> None:
        """One block of a view (a figure drawn by the viz function it names)."""
        match block:
            case Text():
                self.text(block.text, block.note)
            case Table():
                self.table(block.frame, block.caption, block.collapsed, block.keep)
            case Figure():
                self.chart(block.name, getattr(viz, block.chart)(**block.args), block.caption)
            case Heading():
                self.heading(block.text, level=3, anchor=block.anchor)


def show(what: View | Block) -> None:
    """Display a stage's view in a notebook, e.g. ``show(view(study, "causal"))``, or one block of one, e.g.
    ``show(Table(df, "caption"))``: text and tables as the supplement's HTML, and each figure in its place as a chart
    drawn offline by altair's active renderer (the widget :func:`lexprobe.views.viz.enable_offline` sets up)."""
    page = Page()
    if isinstance(what, View):
        page.view(what)
    else:
        page.block(what)
    part: list[str] = []
    for block in page.blocks:
        if isinstance(block, Slot):
            _show_html(part)
            _show_chart(page.figures[block.fid])
            part = []
        else:
            part.append(block)
    _show_html(part)


def _show_html(blocks: list[str]) -> None:
    from IPython.display import HTML, display

    if blocks:
        display(HTML(f'{NOTEBOOK_STYLE}<div class="lexprobe-view">{"".join(blocks)}</div>'))


def _show_chart(spec: dict) -> None:
    from IPython.display import display

    if render := alt.renderers.get():  # as altair shows a chart; a renderer may return (data, metadata)
        bundle = render(spec)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        display(data, metadata=metadata, raw=True)


def for_reader(df: pd.DataFrame, caption: str) -> tuple[pd.DataFrame, str]:
    """A table's columns in words (``r2_clean`` -> "R² clean"), key columns with one value (the model, the suite)
    moved into the caption instead of repeated on every row."""
    same = [c for c in KEY_COLUMNS if c in df.columns and len(df) > 1 and df[c].nunique(dropna=False) == 1]
    if same:
        caption += " (" + "; ".join(f"{c.replace('_', ' ')}: {df[c].iloc[0]}" for c in same) + ")"
    out = df.drop(columns=same).rename_axis(columns=None)  # a pivot's axis name would head an empty first column
    return out.rename(columns={c: " ".join(WORDS.get(w, w) for w in str(c).split("_")) for c in out.columns}), caption


def kept_first(df: pd.DataFrame, keep: tuple[str, ...]) -> pd.DataFrame:
    """``df`` with its ``keep`` columns moved to just after the columns that name a row (see :func:`_leading_ids`),
    so that folding a wide table never hides them; a ``keep`` column it lacks is an error, not a silent omission."""
    if missing := [c for c in keep if c not in df.columns]:
        raise KeyError(f"columns to keep {missing} are not in the table (it has {list(df.columns)})")
    keys = [c for c in KEY_COLUMNS if c in df.columns]
    ids = [c for c in _leading_ids(df.drop(columns=keys)) if c not in keep]
    kept = [c for c in keep if c not in keys]
    return df[[*keys, *ids, *kept, *[c for c in df.columns if c not in {*keys, *ids, *kept}]]]


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
