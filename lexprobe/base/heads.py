"""Attention heads: a head is a ``(layer, head)`` pair of 0-based indices, named ``L3H1`` in every table, view and
report; a set of heads is named by its heads' names, space-separated (``L0H1 L0H2``). Names are read back here too."""

from __future__ import annotations

import re
from collections.abc import Iterable

Head = tuple[int, int]
NAME = re.compile(r"L(\d+)H(\d+)")


def head_name(layer: int, head: int) -> str:
    """A head's name: ``L3H1``."""
    return f"L{layer}H{head}"


def heads_name(heads: Iterable[Head]) -> str:
    """A set of heads' name, in the order given: ``L0H1 L0H2`` (empty for no head)."""
    return " ".join(head_name(layer, head) for layer, head in heads)


def parse_head(name: str) -> Head:
    """The head a name denotes (``L3H1`` -> ``(3, 1)``); ValueError for anything else."""
    m = NAME.fullmatch(name)
    if m is None:
        raise ValueError(f"{name!r} is not a head name like 'L3H1'")
    return int(m.group(1)), int(m.group(2))


def parse_heads(names: str) -> tuple[Head, ...]:
    """The heads a set's name denotes, in its order (``'L0H1 L0H2'`` -> ``((0, 1), (0, 2))``; ``''`` -> ``()``)."""
    return tuple(parse_head(name) for name in names.split())
