"""The five stages, one module each, numbered as the notebooks are: each holds its runner (tables in, a stage
dataclass out, heavy work through the results store) and its plain-text report. Statistics live in
:mod:`lexprobe.analysis`; :class:`lexprobe.Study` runs them with one set of settings and caches their results.

* :mod:`~lexprobe.stages.inflection`: when does disambiguation take off?
* :mod:`~lexprobe.stages.discovery`: which heads track it?
* :mod:`~lexprobe.stages.perturbation`: are they robust when the cue moves or changes?
* :mod:`~lexprobe.stages.causal`: are they causally necessary?
* :mod:`~lexprobe.stages.replication`: do the findings replicate across training seeds?
"""
