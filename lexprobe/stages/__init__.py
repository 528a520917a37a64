"""The stages, one module each, each a plug-in (:mod:`lexprobe.stages.registry`): a result dataclass and a stage
object (what it needs, the settings it reads, what it measures, how it runs, what it costs). Every module of this
package that defines ``STAGE`` is registered here, in the order they run (a stage after the stages it needs, then by
label); what a stage shows and says is its report (:mod:`lexprobe.report`). Statistics live in
:mod:`lexprobe.analysis`; :class:`lexprobe.Study` runs the stages with one set of settings and caches their results.

* :mod:`~lexprobe.stages.inflection`: when does disambiguation take off?
* :mod:`~lexprobe.stages.discovery`: which heads track it?
* :mod:`~lexprobe.stages.perturbation`: are they robust when the cue moves or changes?
* :mod:`~lexprobe.stages.causal`: are they causally necessary (ablation) and sufficient (patching)?
* :mod:`~lexprobe.stages.replication`: do the findings replicate across training seeds?
* :mod:`~lexprobe.stages.validation`: on a planted circuit, do the stages find it?

Adding a stage is two files: its module here and its report (``lexprobe/report/NAME_report.py``).
"""

from importlib import import_module
from pkgutil import iter_modules
from typing import Any

from lexprobe.stages.registry import Stage

STAGES: dict[str, Stage[Any]] = {}


def register(stage: Stage[Any]) -> None:
    """Add ``stage`` to :data:`STAGES`, after the stages it needs (then by label); its name must be new."""
    if stage.name in STAGES:
        raise ValueError(f"a stage named {stage.name!r} is registered already")
    missing = [n for n in stage.needs if n not in STAGES]
    if missing:
        raise ValueError(f"stage {stage.name!r} needs {missing}, which no registered stage is")
    every = [*STAGES.values(), stage]
    ordered: list[Stage[Any]] = []
    while every:
        ready = [s for s in every if all(n in {o.name for o in ordered} for n in s.needs)]
        ordered.append(min(ready, key=lambda s: s.label))
        every.remove(ordered[-1])
    STAGES.clear()
    STAGES.update({s.name: s for s in ordered})


def _discover() -> None:
    found = [getattr(import_module(f"{__name__}.{m.name}"), "STAGE", None) for m in iter_modules(__path__)]
    pending = [s for s in found if s is not None]
    while pending:  # each stage once the stages it needs are in
        ready = [s for s in pending if all(n in STAGES for n in s.needs)]
        if not ready:
            raise ValueError(f"stages {[s.name for s in pending]} need stages that are not registered")
        for s in ready:
            register(s)
            pending.remove(s)


_discover()
