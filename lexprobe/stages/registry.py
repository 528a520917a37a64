"""What a stage is to the study that runs it, and the registry of stages.

A stage is a plug-in: a ``name`` (its one word on every surface), the earlier stages it ``needs`` (without them
it has nothing to show) and ``uses`` (it runs without them, and the parts that need them say they were skipped), the
study settings it ``reads`` (its cache inputs besides the suite, stimuli, checkpoints, engine config, scoring rule
and baseline condition that every stage shares), the settings it ``refuses`` (with why: a study that changes one
gets no result from this stage, before any of its work), :meth:`Stage.prepare` (what it will measure and read:
computed once per study, used for the cache key and the run), :meth:`Stage.run`, :meth:`Stage.skip` (why it has
nothing to show on a study, if so: too few checkpoints, one seed, no planted circuit) and :meth:`Stage.cost` (what
it will cost, for ``lexprobe plan``). A stage sees the study through :class:`StageSettings`, which refuses a setting
the stage did not list in ``reads``: a stage cannot depend on a setting its cache key leaves out. What a stage shows
and says is its report (:mod:`lexprobe.report`), outside its cache key.

Every stage measures under one ``baseline`` condition, the study's ``intervention`` (the intact model by default):
its own measurements and the earlier results it compares them with are of the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import pandas as pd

from lexprobe.stages.costs import StageCost

if TYPE_CHECKING:
    from lexprobe.analysis.performance import Scoring
    from lexprobe.checkpoints.suites import Suite
    from lexprobe.engine.conditions import Condition
    from lexprobe.engine.extract import ExtractConfig
    from lexprobe.stages.costs import Costing
    from lexprobe.stimuli.tables import Stimuli
    from lexprobe.store.results import ResultsStore

R = TypeVar("R")

# what every stage may read without listing it: the study's resolved inputs, shared by every cache key
COMMON = frozenset({"checkpoint_suite", "stimulus_set", "checkpoints", "config", "scoring", "baseline", "store",
                    "progress", "derived", "timings"})


@dataclass(frozen=True)
class Reads:
    """Stored units a stage reads: ``measurement`` of the stimulus set ``stimuli`` under ``conditions`` at
    ``steps``, for ``models`` and ``seeds`` (None: all of the suite's)."""

    measurement: str
    stimuli: str
    conditions: tuple[str, ...]
    steps: tuple[int, ...]
    models: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None


@dataclass
class Prepared:
    """What a stage will do, worked out before it runs: the stored units it ``reads`` (their fingerprints join its
    cache key), extra cache ``inputs`` (e.g. hashes of derived stimulus sets) and stage-specific ``data`` (a design,
    stimulus sets) handed to :meth:`Stage.run`."""

    reads: list[Reads] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


class Context(Protocol):
    """The study as a stage sees it (see :class:`StageSettings`)."""

    checkpoint_suite: Suite
    stimulus_set: Stimuli
    checkpoints: tuple[int, ...]
    config: ExtractConfig
    scoring: Scoring
    baseline: Condition  # what every stage measures under: the study's intervention (the intact model by default)
    store: ResultsStore
    progress: bool

    def derived(self, name: str, step: int, make: Callable[[], dict[str, Stimuli]]) -> dict[str, Stimuli]: ...

    def __getattr__(self, name: str) -> Any: ...  # the settings a stage lists in ``reads``


class Stage(Protocol, Generic[R]):
    """A stage plug-in (see the module docstring)."""

    name: str
    label: str  # how reports call it: "stage 1" ... "stage 5", "validation"
    aliases: tuple[str, ...]  # its command's other names (the command is its name)
    summary: str  # its command's help line
    title: str
    result: type[R]
    needs: tuple[str, ...]
    uses: tuple[str, ...]
    reads: tuple[str, ...]
    refuses: dict[str, str]  # setting -> why this stage cannot honour a value other than its default
    given: tuple[str, ...]  # result fields supplied by the study on load, not stored

    def skip(self, study: Context, earlier: dict[str, Any]) -> str | None: ...

    def prepare(self, study: Context, earlier: dict[str, Any]) -> Prepared: ...

    def run(self, study: Context, earlier: dict[str, Any], prepared: Prepared) -> R: ...

    def given_values(self, study: Context) -> dict[str, Any]: ...

    def cost(self, study: Context, costing: Costing) -> StageCost: ...


class Plugin:
    """Defaults of a stage plug-in: it needs, uses, reads and refuses nothing, stores every field, always has
    something to show and measures nothing before it runs."""

    name: str
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    refuses: dict[str, str] = {}  # a class default, never mutated
    given: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def given_values(self, study: Context) -> dict[str, Any]:
        """The values of the ``given`` fields, from the study."""
        return {}

    def skip(self, study: Context, earlier: dict[str, Any]) -> str | None:
        """Why this stage has nothing to show on this study (e.g. one seed for replication), or None."""
        return None

    def prepare(self, study: Context, earlier: dict[str, Any]) -> Prepared:
        return Prepared()

    def cost(self, study: Context, costing: Costing) -> StageCost:
        """What this stage will measure and store on ``study`` (nothing: it reads stored tables)."""
        return StageCost(self.name)


@dataclass(frozen=True)
class Skipped:
    """A stage with nothing to show on a study, and why (``Study.outcome``)."""

    stage: str
    reason: str


PARTS = ["part", "needs", "reason"]  # the columns of a result's ``parts_skipped`` table


def parts_skipped(earlier: dict[str, Any], parts: dict[str, str]) -> pd.DataFrame:
    """The parts of a stage left out because an earlier stage it uses was skipped: one row per part (``parts``:
    part -> the stage it needs) whose stage is :class:`Skipped` in ``earlier``, with that stage's reason."""
    rows = [{"part": part, "needs": need, "reason": earlier[need].reason} for part, need in parts.items()
            if isinstance(earlier.get(need), Skipped)]
    return pd.DataFrame(rows, columns=PARTS)


def ran(earlier: dict[str, Any], name: str) -> Any:
    """The result of the earlier stage ``name``, or None when it was skipped."""
    out = earlier.get(name)
    return None if isinstance(out, Skipped) else out


class StageSkipped(ValueError):
    """Raised when a skipped stage's result is asked for (``Study.result``); the message says why."""


class StageSettings:
    """A study seen by one stage: the shared inputs (``COMMON``) and the settings the stage ``reads``; any other
    setting raises, naming the stage and the setting (a stage's cache key holds exactly what it reads)."""

    def __init__(self, study: Any, stage: Stage[Any], settings: frozenset[str]):
        self._study, self._stage, self._settings = study, stage, settings

    def __getattr__(self, name: str) -> Any:
        if name in COMMON:
            return getattr(self._study, name)
        if name in self._settings and name not in self._stage.reads:
            raise AttributeError(f"stage {self._stage.name!r} reads the study setting {name!r} but does not list it "
                                 f"in its reads {self._stage.reads}: add it there, so that its cache key holds it")
        if name not in self._settings:
            raise AttributeError(f"stage {self._stage.name!r} asked the study for {name!r}, which is neither a "
                                 f"setting nor one of {sorted(COMMON)}")
        return getattr(self._study, name)
