"""Revision names as the open checkpoint suites publish them, parsed rather than assumed.

A :class:`Naming` reads a suite's branch names into :class:`Revision` values: the training step, the tokens seen
where the name gives them (so that curves of different suites can share a tokens axis), and the training stage.
Names a naming does not recognise, and revisions off the first stage's step axis (OLMo-2's ``stage2-ingredient``
branches), are listed with the reason they are left out, never silently dropped. Where two names give one step
(OLMo-2 publishes some steps with and without the ``stage1-`` prefix) the first in sorted order is kept and the
other listed as its alias.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

UNITS = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


@dataclass(frozen=True)
class Revision:
    """One parsed branch name."""

    name: str
    step: int
    tokens: int | None = None  # tokens seen, where the name says
    stage: int = 1


@dataclass(frozen=True)
class Naming:
    """How one suite names its revisions: a regex with a ``step`` group, and optional ``tokens``+``unit`` and
    ``stage`` groups."""

    name: str
    pattern: str
    example: str

    def parse(self, name: str) -> Revision | None:
        """The revision a branch name denotes, or None when this naming does not recognise it."""
        m = re.fullmatch(self.pattern, name)
        if m is None:
            return None
        groups = m.groupdict()
        tokens = int(groups["tokens"]) * UNITS[groups["unit"]] if groups.get("tokens") else None
        return Revision(name, int(groups["step"]), tokens, int(groups.get("stage") or 1))

    def read(self, names: Iterable[str]) -> tuple[dict[int, Revision], dict[str, str]]:
        """The first-stage revisions by step, and every other name with why it is left out."""
        kept: dict[int, Revision] = {}
        left: dict[str, str] = {}
        for name in sorted(names):
            if name == "main":
                left[name] = "main (the final weights under another name, or empty in a seed repo)"
                continue
            rev = self.parse(name)
            if rev is None:
                left[name] = f"not a {self.name} revision name (expected like {self.example!r})"
            elif rev.stage != 1:
                left[name] = f"training stage {rev.stage}: not on stage 1's step axis"
            elif rev.step in kept:
                left[name] = f"another name of step {rev.step} (kept {kept[rev.step].name!r})"
            else:
                kept[rev.step] = rev
        return dict(sorted(kept.items())), left


NAMINGS: dict[str, Naming] = {
    "pythia": Naming("pythia", r"step(?P<step>\d+)", "step1000"),
    "crfm": Naming("crfm", r"checkpoint-(?P<step>\d+)", "checkpoint-4000"),
    "olmo": Naming("olmo", r"step(?P<step>\d+)-tokens(?P<tokens>\d+)(?P<unit>[KMBT])", "step1000-tokens4B"),
    "olmo2": Naming("olmo2", r"(?:stage(?P<stage>\d+)-(?:ingredient\d+-)?)?step(?P<step>\d+)-tokens(?P<tokens>\d+)"
                             r"(?P<unit>[KMBT])", "stage1-step1000-tokens3B"),
    "amber": Naming("amber", r"ckpt_(?P<step>\d+)", "ckpt_042"),
    "smollm2": Naming("smollm2", r"step-(?P<step>\d+)", "step-40000"),
}


def crfm_steps() -> tuple[int, ...]:
    """The 609 checkpoints of each Stanford CRFM GPT-2 run: 0-90 by 10, 100-1950 by 50, 2000-19900 by 100,
    20000-400000 by 1000."""
    return (*range(0, 100, 10), *range(100, 2000, 50), *range(2000, 20000, 100), *range(20000, 400001, 1000))


OLMO2_1B_TOKENS_PER_STEP = 2**21  # 4,096 tokens x 512 sequences: 1,907,359 steps make the published 4T tokens


def olmo2_1b_steps() -> tuple[int, ...]:
    """OLMo-2-0425-1B's published stage-1 checkpoints (allenai/OLMo ``configs/official-0425``, OLMo format): steps 0
    and 300, every 10,000 to 1,900,000, the extra 23,100 and 66,200, and the last, 1,907,359."""
    return tuple(sorted({0, 300, 23100, 66200, 1907359, *range(10000, 1900001, 10000)}))


def olmo2_revision_name(step: int) -> str:
    """The hub branch name OLMo-2-0425-1B gives a stage-1 step: tokens seen in billions, rounded up (the scheme of
    published names such as ``stage2-ingredient1-step23852-tokens51B``)."""
    return f"stage1-step{step}-tokens{-(-step * OLMO2_1B_TOKENS_PER_STEP // 10**9)}B"


def naming_of(pattern: str) -> Naming:
    """A naming for a user's suite: a regex with a ``step`` group (optional ``tokens``+``unit``, ``stage``)."""
    try:
        groups = re.compile(pattern).groupindex
    except re.error as err:
        raise ValueError(f"revision pattern {pattern!r} is not a regular expression: {err}") from err
    if "step" not in groups:
        raise ValueError(f"revision pattern {pattern!r} needs a named group 'step', e.g. 'ckpt-(?P<step>\\d+)'")
    return Naming("custom", pattern, pattern)
