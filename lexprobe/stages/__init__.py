"""The five stages, one module each, numbered as the notebooks are: each holds its runner (tables in, a stage
dataclass out, heavy work through the results store) and its plain-text report. Statistics live in
:mod:`lexprobe.analysis`; :class:`lexprobe.Study` runs them with one set of settings and caches their results.

* :mod:`~lexprobe.stages.stage1_inflection`: when does disambiguation take off?
* :mod:`~lexprobe.stages.stage2_heads`: which heads track it?
* :mod:`~lexprobe.stages.stage3_perturbation`: are they robust when the cue moves or changes?
* :mod:`~lexprobe.stages.stage4_causal`: are they causally necessary?
* :mod:`~lexprobe.stages.stage5_seeds`: do the findings replicate across training seeds?
"""
