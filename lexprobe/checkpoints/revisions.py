"""Revision names as the open checkpoint suites publish them, parsed rather than assumed.

A :class:`Naming` is one naming scheme (``stepN``, ``step-N``, ``checkpoint-N``, ``ckpt_NNN``, ``global_stepN``,
OLMo's ``stepN-tokensXB``, OLMo-2's ``stage1-stepN-tokensXB``, a user's pattern): it writes a step's name, for a
published grid, and reads names back into :class:`Revision` values: the training step, the tokens seen where the name
gives them (so that curves of different suites can share a tokens axis), and the training stage.
:func:`naming_for` picks the naming that reads a listing (a run's folders).
Names a naming does not recognise, and revisions off the first stage's step axis (OLMo-2's ``stage2-ingredient``
branches), are listed with the reason they are left out, never silently dropped. Where two names give one step
(OLMo-2 publishes some steps with and without the ``stage1-`` prefix) the first in sorted order is kept and the
other listed as its alias.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

UNITS = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
FIELDS = {"step": r"(?P<step>\d+)", "stage": r"(?P<stage>\d+)", "tokens": r"(?P<tokens>\d+)(?P<unit>[KMBT])"}


@dataclass(frozen=True)
class Revision:
    """One parsed branch name."""

    name: str
    step: int
    tokens: int | None = None  # tokens seen, where the name says
    stage: int = 1


def _fields(template: str) -> list[tuple[str, str | None]]:
    """A template's (literal text, field name) parts; ValueError when it is not a ``str.format`` template."""
    return [(text, name) for text, name, _, _ in string.Formatter().parse(template)]


def template_regex(template: str) -> str:
    """The regex of the names a template writes: its text literally, ``{step}`` and ``{stage}`` as numbers,
    ``{tokens}`` as a number and a unit, any other field (``{ingredient}``) as a number that is not read."""
    return "".join(re.escape(text) + ("" if name is None else FIELDS.get(name, r"\d+"))
                   for text, name in _fields(template))


@dataclass(frozen=True)
class Naming:
    """How one scheme names checkpoints (hub branches, a run's folders): it writes a step's name from ``template``
    and reads names back by ``patterns``, regexes with a ``step`` group and optional ``tokens``+``unit`` and
    ``stage`` groups (tried in order; :meth:`of` derives them from templates, so what it writes it reads back)."""

    name: str
    template: str | None  # ``{step}`` (``{step:03d}``: zero-padded), ``{tokens}``; None: a user's regex (reads only)
    patterns: tuple[str, ...]
    unit: str = "B"  # the unit ``{tokens}`` is written in, rounded up

    @classmethod
    def of(cls, name: str, template: str, *also: str) -> Naming:
        """The naming written by ``template`` that also reads the names the ``also`` templates write (another name
        the scheme is published under, another training stage)."""
        return cls(name, template, tuple(template_regex(t) for t in (template, *also)))

    @property
    def example(self) -> str:
        """A name as this naming writes it, for messages (its pattern where it writes none)."""
        return self.patterns[0] if self.template is None else self.format(1000, 4 * 10**9)

    def format(self, step: int, tokens: int | None = None) -> str:
        """The name of a step; ``tokens``: tokens seen by then, where the name gives them (written in ``unit``,
        rounded up)."""
        if self.template is None:
            raise ValueError(f"revision naming {self.name!r} is a regular expression: it reads names but writes "
                             f"none (give a template such as 'ckpt-{{step}}' instead)")
        if tokens is None and "{tokens}" in self.template:
            raise ValueError(f"revision naming {self.name!r} writes the tokens seen: give tokens")
        written = None if tokens is None else f"{-(-tokens // UNITS[self.unit])}{self.unit}"
        return self.template.format(step=step, tokens=written)

    def parse(self, name: str) -> Revision | None:
        """The revision a branch name denotes, or None when this naming does not recognise it."""
        m = next(filter(None, (re.fullmatch(p, name) for p in self.patterns)), None)
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


NAMINGS: dict[str, Naming] = {n.name: n for n in (
    Naming.of("pythia", "step{step}"),
    Naming.of("crfm", "checkpoint-{step}"),
    Naming.of("olmo", "step{step}-tokens{tokens}"),
    Naming.of("olmo2", "stage1-step{step}-tokens{tokens}", "step{step}-tokens{tokens}",
              "stage{stage}-step{step}-tokens{tokens}",
              "stage{stage}-ingredient{ingredient}-step{step}-tokens{tokens}"),
    Naming.of("amber", "ckpt_{step:03d}"),
    Naming.of("smollm2", "step-{step}"),
    Naming.of("deepspeed", "global_step{step}"),
)}
STEP_N = NAMINGS["pythia"]
"""``stepN``: Pythia's branches, the organism's, and the default of a hub cache and a local folder."""
FOLDERS = (STEP_N, NAMINGS["smollm2"], NAMINGS["crfm"], NAMINGS["deepspeed"])
"""How training runs name their checkpoint folders (``stepN``, ``step-N``, ``checkpoint-N``, ``global_stepN``), in
the order :func:`naming_for` prefers them."""


def naming_for(names: Iterable[str], namings: Iterable[Naming] = FOLDERS) -> Naming | None:
    """The naming that reads the most of ``names`` (a folder listing, a repo's branches; on a tie the first of
    ``namings``), or None when none reads any (add a user's :func:`naming_of` to ``namings`` to consider it)."""
    listed = list(names)
    count, best = max(((sum(n.parse(x) is not None for x in listed), n) for n in namings),
                      key=lambda c: c[0], default=(0, None))
    return best if count else None


def crfm_steps() -> tuple[int, ...]:
    """The 609 checkpoints of each Stanford CRFM GPT-2 run: 0-90 by 10, 100-1950 by 50, 2000-19900 by 100,
    20000-400000 by 1000."""
    return (*range(0, 100, 10), *range(100, 2000, 50), *range(2000, 20000, 100), *range(20000, 400001, 1000))


OLMO2_1B_TOKENS_PER_STEP = 2**21  # 4,096 tokens x 512 sequences: 1,907,359 steps make the published 4T tokens


def olmo2_1b_steps() -> tuple[int, ...]:
    """OLMo-2-0425-1B's published stage-1 checkpoints (allenai/OLMo ``configs/official-0425``, OLMo format): steps 0
    and 300, every 10,000 to 1,900,000, the extra 23,100 and 66,200, and the last, 1,907,359."""
    return tuple(sorted({0, 300, 23100, 66200, 1907359, *range(10000, 1900001, 10000)}))


def naming_of(pattern: str) -> Naming:
    """A naming for a user's suite: a template with a ``{step}`` field (``ckpt-{step}``, optional ``{tokens}``;
    it writes names too), or a regex with a ``step`` group (optional ``tokens``+``unit``, ``stage``; it only reads)."""
    try:
        if any(name == "step" for _, name in _fields(pattern)):
            return Naming.of("custom", pattern)
    except ValueError:  # a lone brace: no template, maybe a regex
        pass
    try:
        groups = re.compile(pattern).groupindex
    except re.error as err:
        raise ValueError(f"revision pattern {pattern!r} is not a regular expression: {err}") from err
    if "step" not in groups:
        raise ValueError(f"revision pattern {pattern!r} needs a named group 'step', e.g. 'ckpt-(?P<step>\\d+)', or "
                         f"a template field, e.g. 'ckpt-{{step}}'")
    return Naming("custom", None, (pattern,))
