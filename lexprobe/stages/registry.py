"""What a stage is to the study that runs it, and the registry of stages.

A stage is a plug-in: a ``name`` (its one word on every surface), the earlier stages it ``needs``, the study
settings it ``reads`` (its cache inputs besides the suite, stimuli, checkpoints, engine config and scoring rule that
every stage shares), :meth:`Stage.prepare` (what it will measure and read: computed once per study, used for the
cache key and the run), :meth:`Stage.run`, and :meth:`Stage.skip` (why it has nothing to show on a study, if so:
too few checkpoints, one seed, no planted circuit). A stage sees the study through
:class:`StageSettings`, which refuses a setting the stage did not list in ``reads``: a stage cannot depend on a
setting its cache key leaves out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from lexprobe.analysis.performance import Scoring
    from lexprobe.checkpoints.suites import Suite
    from lexprobe.engine.extract import ExtractConfig
    from lexprobe.stimuli.tables import Stimuli
    from lexprobe.store.results import ResultsStore

R = TypeVar("R")

# what every stage may read without listing it: the study's resolved inputs, shared by every cache key
COMMON = frozenset({"checkpoint_suite", "stimulus_set", "checkpoints", "config", "scoring", "store", "progress",
                    "derived", "timings"})


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
    reads: tuple[str, ...]
    given: tuple[str, ...]  # result fields supplied by the study on load, not stored

    def skip(self, study: Context, earlier: dict[str, Any]) -> str | None: ...

    def prepare(self, study: Context, earlier: dict[str, Any]) -> Prepared: ...

    def run(self, study: Context, earlier: dict[str, Any], prepared: Prepared) -> R: ...

    def given_values(self, study: Context) -> dict[str, Any]: ...


class Plugin:
    """Defaults of a stage plug-in: it needs and reads nothing, stores every field, always has something to show
    and measures nothing before it runs."""

    needs: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
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


@dataclass(frozen=True)
class Skipped:
    """A stage with nothing to show on a study, and why (``Study.outcome``)."""

    stage: str
    reason: str


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
