"""A stage's :class:`~lexprobe.base.view.View` as plain text (what the stage commands print)."""

from __future__ import annotations

from lexprobe.base.view import Block, Figure, Heading, Table, Text, View


def _block(block: Block) -> list[str]:
    match block:
        case Text():
            return [block.text]
        case Heading():
            return ["", block.text, ""]
        case Figure():
            return [f"[figure: {block.caption}]"]
        case Table() if block.frame.empty:
            return ["", f"{block.caption}: (no rows)", ""]
        case Table():
            return ["", f"{block.caption}:", block.frame.to_string(index=False, na_rep="-",
                                                                     float_format=lambda v: f"{v:.4g}"), ""]


def render_text(view: View) -> str:
    """The view as text: its title, then its blocks (tables with compact floats, a figure as one line)."""
    lines = [view.title, "=" * len(view.title), *([view.skipped] if view.skipped else [])]
    for block in view.blocks:
        lines += _block(block)
    text = "\n".join(lines).strip("\n")
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text
