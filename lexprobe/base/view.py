"""What a stage shows, as data: a :class:`View` of blocks (text, tables, figures, headings) that the plain-text
report (:func:`lexprobe.views.text.render_text`) and the HTML of the supplement and the notebooks
(:mod:`lexprobe.views.html`) render, so each stage describes its view once (``describe`` in each stage's report)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Text:
    """A sentence; ``note``: commentary (how to read the rest) rather than a finding."""

    text: str
    note: bool = False


@dataclass(frozen=True)
class Table:
    """A table under its caption; ``collapsed``: folded away in the HTML (None: when it is long; False: never);
    ``keep``: columns a finding quotes, shown
    before any column that a wide table folds away."""

    frame: pd.DataFrame
    caption: str
    collapsed: bool | None = None
    keep: tuple[str, ...] = ()


@dataclass(frozen=True)
class Figure:
    """A chart: ``chart`` names a function of :mod:`lexprobe.views.viz`, ``args`` its keyword arguments; ``name``
    is the figure's id in the HTML."""

    chart: str
    args: dict[str, Any]
    caption: str
    name: str


@dataclass(frozen=True)
class Heading:
    """A sub-section heading inside a view (``anchor``: its HTML id)."""

    text: str
    anchor: str | None = None


Block = Text | Table | Figure | Heading


@dataclass(frozen=True)
class View:
    """A stage's section: its title, its HTML anchor and its blocks in order; ``skipped``: the sentence saying why
    the stage has nothing to show (then there are no blocks)."""

    title: str
    anchor: str
    blocks: tuple[Block, ...] = ()
    skipped: str | None = None

    @classmethod
    def skipped_because(cls, name: str, reason: str) -> View:
        """The view of a stage that has nothing to show, e.g. ``View.skipped_because("stage 2", "too few steps")``:
        headed by its name, with the reason."""
        return cls(name.capitalize(), name.replace(" ", ""), skipped=f"{name} skipped: {reason}")
