"""A study: one frozen set of settings that every stage honours, and the five stages as its cached members.

    from lexprobe import Study
    study = Study("organism", by="signed")
    study.inflection.inflection       # stage 1 (extracted through the store on first use)
    study.heads.stats                 # stage 2, same store, same best-layer rule
    study.perturbation, study.causal, study.seeds   # stages 3-5

Smoke defaults (``LEXPROBE_SMOKE=1``: tiny organism, fewer checkpoints and draws) are resolved here and nowhere
else, when the study is made, so ``repr(study)`` shows what runs. Each stage's result is kept in memory and in the
results store (:mod:`lexprobe.store.stagecache`), keyed by the settings it depends on, the stored units it read and the
code that computes it: a finished study only reads tables, and a changed setting or a re-measured unit recomputes
exactly the stages that depend on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any, TypeVar

from lexprobe.analysis.performance import SCORE_OF, target_of
from lexprobe.base.files import fingerprint
from lexprobe.base.paths import results_dir, smoke
from lexprobe.checkpoints.suites import Suite, log_subset, parse_steps, tokenizer_identity
from lexprobe.engine.device import DEVICES, DTYPES
from lexprobe.engine.extract import ExtractConfig
from lexprobe.engine.interventions import Intervention
from lexprobe.live import Live
from lexprobe.organism.suite import resolve
from lexprobe.stages.causal import (
    METHODS,
    Causal,
    causal_stage,
    copy_source,
    design_for,
    measured_conditions,
)
from lexprobe.stages.discovery import Discovery, head_stage
from lexprobe.stages.inflection import Inflection, inflection_stage
from lexprobe.stages.patching import counterfactual_of
from lexprobe.stages.perturbation import (
    Perturbation,
    measurable,
    perturbation_stage,
    perturbation_steps,
    perturbed_sets,
)
from lexprobe.stages.replication import Replication, seed_stage
from lexprobe.stimuli.perturb import data_fingerprint
from lexprobe.stimuli.tables import Stimuli, StimulusSets, load_stimuli
from lexprobe.store.results import ResultsStore
from lexprobe.store.stagecache import StageCache, key_of, units_fingerprint
from lexprobe.sweep.run import condition_of

S = TypeVar("S")
RUNTIME = ("progress", "cache")  # settings that change how a study runs, never its numbers

# setting: (full default, smoke default); 0 steps means every checkpoint
SMOKE_DEFAULTS: dict[str, tuple[int, int]] = {"n_random": (100, 5), "n_random_dev": (10, 2), "map_steps": (0, 2),
                                              "perturb_steps": (0, 4), "redundancy_steps": (4, 1)}


@dataclass(frozen=True)
class Study:
    """The settings of one study; stages 1-5 are its cached members (see the module docstring).

    ``suite`` and ``stimuli`` are specs (``"organism"``, ``"pythia-14m:seeds=0-9"``, a shipped set name or a CSV
    path) or objects; ``root`` is the results store (default ``$LEXPROBE_HOME/results``); ``by`` picks each
    checkpoint's best layer (``"r2"``, ``"signed"``, ``"auc"``) in every stage, as does ``exclude_embedding``.
    ``None`` sizes take their defaults (smoke defaults under LEXPROBE_SMOKE=1). ``intervention`` measures the whole
    study on an intervened model (stored under its own condition). ``counterfactual`` is stage 4's patching
    counterfactual set (sentences with ``source_id``; default: the ``neutral`` perturbation of the stimuli)."""

    suite: str | Suite = "organism"
    stimuli: str | Stimuli = "lexprobe_nouns"
    steps: str = "all"
    by: str = "r2"
    exclude_embedding: bool = False
    root: str | None = None
    n_boot: int = 200
    n_perm: int = 2000
    n_random: int | None = None
    n_random_dev: int | None = None
    map_steps: int | None = None
    perturb_steps: int | None = None
    redundancy_steps: int | None = None
    methods: tuple[str, ...] = METHODS
    layer_matched: bool = False
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 64
    intervention: Intervention | None = None
    counterfactual: Stimuli | None = None
    progress: bool = field(default=True, compare=False)
    cache: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        if self.by not in SCORE_OF:
            raise ValueError(f"Study(by={self.by!r}): choose one of {tuple(SCORE_OF)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"Study(dtype={self.dtype!r}): choose one of {tuple(DTYPES)}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"Study(methods={tuple(self.methods)!r}): {bad} not among stage 4's {METHODS}")
        if self.device not in DEVICES:
            raise ValueError(f"Study(device={self.device!r}): choose one of {DEVICES}")
        for name, (full, small) in SMOKE_DEFAULTS.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, small if smoke() else full)
        object.__setattr__(self, "root", str(self.root or results_dir()))
        object.__setattr__(self, "methods", tuple(self.methods))

    def with_(self, **changes: Any) -> Study:
        """The same study with some settings changed (a new study: nothing is shared but the store)."""
        return replace(self, **changes)

    # ---- resolved inputs -------------------------------------------------------------------------------------
    @cached_property
    def stimulus_set(self) -> Stimuli:
        return load_stimuli(self.stimuli) if isinstance(self.stimuli, str) else self.stimuli

    @cached_property
    def checkpoint_suite(self) -> Suite:
        """The suite (an organism spec is trained on first use, after the stimuli are known to be valid)."""
        self.stimulus_set  # noqa: B018 - a bad stimulus file fails before any training
        started = time.perf_counter()
        suite = resolve(self.suite) if isinstance(self.suite, str) else self.suite
        self.timings["suite"] = {"seconds": time.perf_counter() - started, "cached": None}
        return suite

    @cached_property
    def timings(self) -> dict[str, dict[str, Any]]:
        """Wall time this study object spent on each part it ran: ``suite`` (an organism trained or found),
        ``stage1`` ... ``stage5`` (its own work, inputs from earlier stages excluded; ``cached``: read from the
        stage cache), in the order they ran."""
        return {}

    @cached_property
    def checkpoints(self) -> tuple[int, ...]:
        return parse_steps(self.steps, self.checkpoint_suite.steps)

    @property
    def config(self) -> ExtractConfig:
        return ExtractConfig(batch_size=self.batch_size, dtype=self.dtype, device=self.device)

    @cached_property
    def store(self) -> ResultsStore:
        """The study's results store: one object, so its manifest cache (re-read when a file changes) serves every
        stage's cache key."""
        return ResultsStore(str(self.root))

    @cached_property
    def live(self) -> Live:
        """Live measurements at this study's checkpoints, for the inspectors."""
        return Live(self.checkpoint_suite, self.stimulus_set, target_of(self.stimulus_set.pairs), self.checkpoints,
                    replace(self.config, save_embeddings=False))

    def settings(self) -> dict[str, Any]:
        """Every setting that can change a number, as plain values."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUNTIME}
        out["suite"] = self.checkpoint_suite.identity()
        out["stimuli"] = self.stimulus_set.hash
        out["steps"] = list(self.checkpoints)
        out["intervention"] = None if self.intervention is None else self.intervention.spec()
        out["counterfactual"] = None if self.counterfactual is None else self.counterfactual.hash
        out["config"] = self.config.fingerprint_fields()
        for f in ("root", "device", "batch_size", "dtype"):
            del out[f]  # where results live and how they are batched do not change them; dtype is in config
        return out

    # ---- the five stages -------------------------------------------------------------------------------------
    def _stage(self, stage: str, cls: type[S], key: Callable[[], dict[str, Any] | None], given: dict[str, Any],
               compute: Callable[[], S]) -> tuple[S, str | None]:
        """A stage's result from the stage cache or ``compute()``, with its cache key. ``key()`` gives the inputs
        it depends on (None while one of them is not stored, e.g. a skipped checkpoint: then nothing is cached);
        after computing it is asked again, since computing may have measured the inputs."""
        cache = StageCache(str(self.root))
        where = (self.checkpoint_suite.name, self.stimulus_set.name, stage)
        started = time.perf_counter()
        inputs = key() if self.cache else None
        if inputs is not None:
            k = key_of(stage=stage, **inputs)
            hit = cache.get(cls, (*where, k), given)
            if hit is not None:
                self.timings[stage] = {"seconds": time.perf_counter() - started, "cached": True}
                return hit, k
        result = compute()
        inputs = key() if self.cache else None
        stored = None
        if inputs is not None:
            stored = key_of(stage=stage, **inputs)
            cache.put(result, (*where, stored), tuple(given), inputs)
        self.timings[stage] = {"seconds": time.perf_counter() - started, "cached": False}
        return result, stored

    def _units(self, measurement: str, stimuli: str, conditions: list[str], steps: tuple[int, ...],
               models: list[str] | None = None, seeds: list[int] | None = None) -> str | None:
        suite = self.checkpoint_suite
        return units_fingerprint(self.store, measurement, suite.name, stimuli, conditions,
                                 models or list(suite.models), seeds or [int(s) for s in suite.seeds], list(steps))

    def _derived(self, name: str, step: int, make: Callable[[], dict[str, Stimuli]]) -> dict[str, Stimuli]:
        """Stimulus sets derived with the tokenizer of stage 1's checkpoint at ``step`` (stage 3's perturbed sets,
        stage 4's counterfactual), from the stage cache while the stimuli, that tokenizer's files (hashed on
        disk, not loaded) and the perturbation data are the ones they were made from."""
        s1, _ = self._inflection
        tokenizer = tokenizer_identity(s1.tokenizer_at(step))

        def key() -> dict[str, Any] | None:
            return None if tokenizer is None else {"stimuli": self.stimulus_set.hash, "tokenizer": tokenizer,
                                                   "data": data_fingerprint()}

        return self._stage(name, StimulusSets, key, {}, lambda: StimulusSets(make()))[0].sets

    @cached_property
    def _inflection(self) -> tuple[Inflection, str | None]:
        condition = condition_of(self.intervention)
        st = self.settings()

        def key() -> dict[str, Any] | None:
            units = self._units("distances", self.stimulus_set.name, [condition], self.checkpoints)
            return None if units is None else {
                "settings": {k: st[k] for k in ("suite", "stimuli", "steps", "by", "exclude_embedding", "n_boot",
                                                "seed", "intervention", "config")}, "units": units}

        given = {"suite": self.checkpoint_suite, "stimuli": self.stimulus_set, "root": str(self.root),
                 "config": self.config}
        return self._stage("stage1", Inflection, key, given, lambda: inflection_stage(
            self.checkpoint_suite, self.stimulus_set, self.checkpoints, self.root, self.n_boot,
            self.exclude_embedding, self.intervention, self.progress, self.by, self.config, self.seed))

    @property
    def inflection(self) -> Inflection:
        """Stage 1: performance per layer and checkpoint, best layers, the inflection per seed."""
        return self._inflection[0]

    @cached_property
    def _heads(self) -> tuple[Discovery, str | None]:
        s1, k1 = self._inflection

        def key() -> dict[str, Any] | None:
            units = self._units("heads", self.stimulus_set.name, [s1.condition], s1.steps)
            return None if units is None or k1 is None else {"stage1": k1, "n_perm": self.n_perm,
                                                             "seed": self.seed, "units": units}

        return self._stage("stage2", Discovery, key, {}, lambda: head_stage(s1, self.n_perm, self.seed))

    @property
    def heads(self) -> Discovery:
        """Stage 2: head discovery (attention to the cue that tracks the stage-1 score), with its controls."""
        return self._heads[0]

    @cached_property
    def _perturbation(self) -> tuple[Perturbation, str | None]:
        s1, k1 = self._inflection
        s2, k2 = self._heads
        n_steps = self.perturb_steps
        assert n_steps is not None  # __post_init__ filled the default in
        steps = perturbation_steps(s1, n_steps)
        sets = self._derived("stage3-sets", steps[-1], lambda: perturbed_sets(s1, n_steps))

        def key() -> dict[str, Any] | None:
            units = [self._units(m, ps.name, ["intact"], steps) for ps in measurable(sets, s1.stimuli).values()
                     for m in ("distances", "heads")]
            units.append(self._units("heads", s1.stimuli.name, ["intact"], steps))
            if None in units or k1 is None or k2 is None:
                return None
            return {"stage1": k1, "stage2": k2, "perturb_steps": self.perturb_steps,
                    "sets": {k: ps.hash for k, ps in sets.items()}, "units": fingerprint({"u": units})}

        return self._stage("stage3", Perturbation, key, {}, lambda: perturbation_stage(
            s1, s2, sets, n_steps, self.progress))

    @property
    def perturbation(self) -> Perturbation:
        """Stage 3: the discovered heads and performance under perturbed stimuli."""
        return self._perturbation[0]

    @cached_property
    def _causal(self) -> tuple[Causal, str | None]:
        s1, k1 = self._inflection
        s2, k2 = self._heads
        n_random, n_random_dev, map_steps = self.n_random, self.n_random_dev, self.map_steps
        redundancy_steps = self.redundancy_steps
        assert n_random is not None and n_random_dev is not None and map_steps is not None  # filled by __post_init__
        assert redundancy_steps is not None  # as above
        cf = self.counterfactual if self.counterfactual is not None else self._derived(
            "stage4-counterfactual", s1.steps[-1], lambda: {"neutral": counterfactual_of(s1)})["neutral"]
        plan = design_for(s2, n_random, n_random_dev, self.methods, self.layer_matched, self.seed,
                          copy_source(s1.suite.steps), cf)

        def key() -> dict[str, Any] | None:
            units = [self._units("distances", s1.stimuli.name, list(rows["condition"]), steps, [model], [sd])
                     for model, sd, steps, rows in measured_conditions(plan, s1.steps, map_steps)]
            if None in units or k1 is None or k2 is None:
                return None
            return {"stage1": k1, "stage2": k2, "units": fingerprint({"u": units}), "counterfactual": cf.hash,
                    "redundancy_at": list(log_subset(s1.steps, redundancy_steps)),  # the greedy stores no units
                    **{k: getattr(self, k) for k in ("n_random", "n_random_dev", "map_steps", "layer_matched",
                                                     "n_boot", "seed", "methods", "redundancy_steps")}}

        return self._stage("stage4", Causal, key, {}, lambda: causal_stage(
            s1, s2, n_random, n_random_dev, self.methods, self.layer_matched, map_steps, self.n_boot,
            self.seed, self.progress, cf, redundancy_steps))

    @property
    def causal(self) -> Causal:
        """Stage 4: interventions on the discovered heads against random head sets; the causal head map."""
        return self._causal[0]

    @cached_property
    def _seeds(self) -> tuple[Replication, str | None]:
        s1, k1 = self._inflection
        s2, k2 = self._heads
        s4, k4 = self._causal

        def key() -> dict[str, Any] | None:
            if None in (k1, k2, k4):
                return None
            return {"stage1": k1, "stage2": k2, "stage4": k4, "n_perm": self.n_perm, "seed": self.seed}

        return self._stage("stage5", Replication, key, {}, lambda: seed_stage(s1, s2, s4, n_perm=self.n_perm,
                                                                         seed=self.seed))

    @property
    def seeds(self) -> Replication:
        """Stage 5: do stages 1, 2 and 4 agree across the suite's seeds? (needs >= 2 seeds)"""
        return self._seeds[0]
