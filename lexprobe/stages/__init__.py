"""The stages, one module each, each a plug-in (:mod:`lexprobe.stages.registry`) registered here in the order they
run: a result dataclass, a stage object (what it needs, the settings it reads, what it measures, how it runs) and the
description of its view. Statistics live in :mod:`lexprobe.analysis`; :class:`lexprobe.Study` runs the stages with
one set of settings and caches their results.

* :mod:`~lexprobe.stages.inflection`: when does disambiguation take off?
* :mod:`~lexprobe.stages.discovery`: which heads track it?
* :mod:`~lexprobe.stages.perturbation`: are they robust when the cue moves or changes?
* :mod:`~lexprobe.stages.causal`: are they causally necessary (ablation) and sufficient (patching)?
* :mod:`~lexprobe.stages.replication`: do the findings replicate across training seeds?
* :mod:`~lexprobe.stages.validation`: on a planted circuit, do the stages find it?
"""

from typing import Any

from lexprobe.stages import causal, discovery, inflection, perturbation, replication, validation
from lexprobe.stages.registry import Stage

STAGES: dict[str, Stage[Any]] = {s.STAGE.name: s.STAGE for s in (inflection, discovery, perturbation, causal,
                                                                  replication, validation)}
