"""A study: one frozen set of settings that every stage honours, and the stages as its cached members.

    from lexprobe import Study
    study = Study("organism", by="signed")
    study.inflection.inflection       # stage 1 (extracted through the store on first use)
    study.discovery.stats             # stage 2, same store, same best-layer rule
    study.perturbation, study.causal, study.replication   # stages 3-5
    study.validation                  # on a suite with a planted circuit

The settings are this dataclass's fields, each with its default, its smoke default (``LEXPROBE_SMOKE=1``: tiny
organism, fewer checkpoints and draws; resolved when the study is made, so ``repr(study)`` shows what runs) and its
help text (the command line's flags are made from them). Stages are plug-ins (:mod:`lexprobe.stages.registry`): each
names the settings it reads, and its result is kept in memory and in the results store
(:mod:`lexprobe.store.stagecache`), keyed by those settings, the shared inputs (suite, stimuli, checkpoints, engine
config, scoring rule), the earlier stages' keys, the stored units it read and the code it imports. A finished study
only reads tables, and a changed setting or a re-measured unit recomputes exactly the stages that depend on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import pandas as pd

from lexprobe.analysis.performance import SCORE_OF, Scoring, target_of
from lexprobe.analysis.selection import DEFAULT_RULE, RULES
from lexprobe.base.files import fingerprint
from lexprobe.base.paths import results_dir, smoke
from lexprobe.checkpoints.suites import Suite, parse_steps, tokenizer_identity
from lexprobe.engine.conditions import Condition
from lexprobe.engine.device import DEVICES, DTYPES
from lexprobe.engine.extract import INTACT, ExtractConfig
from lexprobe.engine.interventions import kinds_help
from lexprobe.live import Live
from lexprobe.organism.suite import resolve, suite_help
from lexprobe.stages import STAGES
from lexprobe.stages.causal import LEAN, METHODS, Causal
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.perturbation import Perturbation
from lexprobe.stages.registry import Reads, Skipped, Stage, StageSettings, StageSkipped
from lexprobe.stages.replication import Replication
from lexprobe.stages.validation import Validation
from lexprobe.stimuli.perturb import data_fingerprint
from lexprobe.stimuli.tables import Stimuli, StimulusSets, load_stimuli
from lexprobe.store.results import ResultsStore
from lexprobe.store.stagecache import StageCache, key_of, units_fingerprint

S = TypeVar("S")
RUNTIME = ("progress", "cache")  # settings that change how a study runs, never its numbers
WHERE = ("root", "device", "batch_size")  # where results live and how they are batched: never their numbers
SHARED = ("suite", "stimuli", "steps", "dtype", "by", "exclude_embedding", "intervention")  # every stage's inputs
DERIVING = "lexprobe.stimuli.perturb"  # the code that derives stimulus sets: its source joins their cache key


class StageMember(Generic[S]):
    """A study's member for one stage: its result, run or read from the stage cache on first use (the stage's
    docstring says what it holds)."""

    def __init__(self, name: str):
        self.name = name
        self.__doc__ = type(STAGES[name]).__doc__

    @overload
    def __get__(self, study: None, owner: type) -> StageMember[S]: ...

    @overload
    def __get__(self, study: Study, owner: type) -> S: ...

    def __get__(self, study: Study | None, owner: type) -> S | StageMember[S]:
        return self if study is None else study.result(self.name)


def _use(setting: str, stage: Stage[Any]) -> str:
    """How ``stage`` treats ``setting`` (see :meth:`Study.setting_uses`)."""
    if setting in stage.refuses:
        return f"refused: {stage.refuses[setting]}"
    if setting in RUNTIME + WHERE:
        return "where"
    if setting in SHARED:
        return "shared"
    if setting in stage.reads:
        return "reads"
    earlier = [STAGES[n] for n in (*stage.needs, *stage.uses)]
    via = [s.name for s in earlier if (use := _use(setting, s)) == "reads" or use.startswith("via")]
    return f"via {via[0]}" if via else "not used"


def setting(default: Any, help: str, smoke: Any = None, flag: str | None = None, **extra: Any) -> Any:
    """A study setting: its default, its smoke default (None: the same) and its help text (the CLI flag's)."""
    return field(default=default, metadata={"help": help, "smoke": smoke, "flag": flag, **extra})


@dataclass(frozen=True)
class Study:
    """The settings of one study; the stages are its cached members (see the module docstring).

    ``suite`` and ``stimuli`` are specs (``"organism"``, ``"pythia-14m:seeds=0-9"``, a shipped set name or a CSV
    path) or objects; ``intervention`` measures the whole study under a condition other than the intact model
    (stored under its own condition name); ``counterfactual`` is stage 4's patching counterfactual set (sentences
    with ``source_id``; default: the ``neutral`` perturbation of the stimuli)."""

    suite: str | Suite = setting("organism", f"suite spec: {suite_help()} (LEXPROBE_SMOKE=1: the smoke organism)")
    stimuli: str | Stimuli = setting("lexprobe_nouns", "shipped set name or a CSV in RAW-C schema")
    steps: str = setting("all", "all | rivtrott | last | log:N | first:N | 0,1,512; checkpoints not yet stored "
                         "are measured first")
    by: str = setting("r2", "best-layer rule, in every stage", choices=tuple(SCORE_OF))
    exclude_embedding: bool = setting(False, "never pick layer 0 as the best layer")
    root: str | None = setting(None, "results folder (default: $LEXPROBE_HOME/results)", flag="--out")
    n_boot: int = setting(200, "item-bootstrap draws")
    n_perm: int = setting(2000, "permutations of the permutation nulls")
    selection: str = setting(DEFAULT_RULE, "stage 2's selection rule: original (slope > 0, BH q < .05), trend (and the "
                             "first-difference trend control), prev (and the previous-token control) or both",
                             choices=tuple(RULES))
    n_random: int = setting(100, "stage 4: random head sets (and random edge sets) in each null", smoke=5)
    n_random_dev: int = setting(10, "stage 4: random head sets at every checkpoint", smoke=2)
    map_steps: int = setting(0, "stage 4: log-spaced checkpoints of the single-head and patch maps (0: every one)",
                             smoke=2)
    perturb_steps: int = setting(0, "stage 3: log-spaced checkpoints of the perturbed sets (0: every one)", smoke=4)
    redundancy_steps: int = setting(4, "stage 4: log-spaced checkpoints at which the greedy sufficient set is "
                                    "sought", smoke=1)
    methods: tuple[str, ...] = setting(LEAN, f"stage 4: the discovered heads' ablations against random sets, "
                                       f"comma-separated, of {kinds_help(METHODS)} (knockout adds its edge controls)")
    head_map: bool = setting(False, "stage 4: also ablate every single head at every map checkpoint (the causal head "
                             "map by zero ablation; necessity is answered by the patching maps)")
    layer_matched: bool = setting(False, "stage 4: random sets match the heads' layers")
    seed: int = setting(0, "seed of every resample and random set")
    device: str = setting("cpu", "where checkpoints run; auto picks a GPU when torch sees one",
                          choices=DEVICES)
    dtype: str = setting("float32", "weight dtype; part of the results' fingerprint", choices=tuple(DTYPES))
    batch_size: int | None = setting(None, "sentences per forward pass (default: as many as keep one pass's "
                                     "activations under 32 MiB)", type=int)
    intervention: Condition = field(default=INTACT, metadata={"help": None})
    counterfactual: Stimuli | None = field(default=None, metadata={"help": None})
    progress: bool = field(default=True, compare=False, metadata={"help": None})
    cache: bool = field(default=True, compare=False, metadata={"help": None})

    def __post_init__(self) -> None:
        for f in fields(self):
            allowed = f.metadata.get("choices")
            if allowed is not None and getattr(self, f.name) not in allowed:
                raise ValueError(f"Study({f.name}={getattr(self, f.name)!r}): choose one of {tuple(allowed)}")
            value = f.default if getattr(self, f.name) is None and f.default is not None else getattr(self, f.name)
            if smoke() and f.metadata.get("smoke") is not None and value == f.default:
                value = f.metadata["smoke"]  # None or the default: the smoke default under LEXPROBE_SMOKE=1
            object.__setattr__(self, f.name, value)
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"Study(methods={tuple(self.methods)!r}): {bad} not among stage 4's {METHODS}")
        object.__setattr__(self, "root", str(self.root or results_dir()))
        object.__setattr__(self, "methods", tuple(self.methods))
        self.config  # noqa: B018 - a bad engine setting (batch size) fails here, before the suite is trained

    def with_(self, **changes: Any) -> Study:
        """The same study with some settings changed (a new study: nothing is shared but the store)."""
        return replace(self, **changes)

    # ---- resolved inputs (every stage may read these: they join every stage's cache key) ------------------------
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
        """Wall time this study object spent on each part it ran: ``suite`` (an organism trained or found), then
        each stage and derived set (its own work, earlier stages excluded; ``cached``: read from the stage cache),
        in the order they ran."""
        return {}

    @cached_property
    def checkpoints(self) -> tuple[int, ...]:
        return parse_steps(self.steps, self.checkpoint_suite.steps)

    @property
    def config(self) -> ExtractConfig:
        return ExtractConfig(batch_size=self.batch_size, dtype=self.dtype, device=self.device)

    @cached_property
    def scoring(self) -> Scoring:
        """The best-layer rule every stage scores by (``by``, ``exclude_embedding``, the stimuli's target)."""
        return Scoring(self.by, self.exclude_embedding, target_of(self.stimulus_set.pairs))

    @property
    def baseline(self) -> Condition:
        """The condition every stage measures under and compares with: the study's ``intervention`` (the intact
        model by default)."""
        return self.intervention

    @cached_property
    def store(self) -> ResultsStore:
        """The study's results store: one object, so its manifest cache serves every stage."""
        return ResultsStore(str(self.root))

    @cached_property
    def live(self) -> Live:
        """Live measurements at this study's checkpoints, for the inspectors."""
        return Live(self.checkpoint_suite, self.stimulus_set, self.scoring.target, self.checkpoints,
                    replace(self.config, save_embeddings=False), keep=Path(str(self.root)) / "_live")

    def settings(self) -> dict[str, Any]:
        """Every setting that can change a number, as plain values."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUNTIME + WHERE}
        out["suite"] = self.checkpoint_suite.identity()
        out["stimuli"] = self.stimulus_set.hash
        out["steps"] = list(self.checkpoints)
        out["intervention"] = self.intervention.spec()
        out["counterfactual"] = None if self.counterfactual is None else self.counterfactual.hash
        out["config"] = self.config.fingerprint_fields()
        del out["dtype"]  # in config
        return out

    # ---- the stages ------------------------------------------------------------------------------------------
    @cached_property
    def _results(self) -> dict[str, tuple[Any, str | None]]:
        return {}

    def result(self, name: str) -> Any:
        """The result of the stage called ``name`` (run, or read from the stage cache, with the stages it needs);
        :class:`~lexprobe.stages.registry.StageSkipped` (a ValueError) says why when it has nothing to show."""
        out = self.outcome(name)
        if isinstance(out, Skipped):
            raise StageSkipped(f"{name} skipped: {out.reason}")
        return out

    def outcome(self, name: str) -> Any:
        """The result of the stage called ``name``, or :class:`~lexprobe.stages.registry.Skipped` with the reason it
        has nothing to show on this study (it, or a stage it needs, cannot run: too few checkpoints, one seed, no
        planted circuit)."""
        return self._keyed(name)[0]

    def _keyed(self, name: str) -> tuple[Any, str | None]:
        if name not in STAGES:
            raise KeyError(f"no stage named {name!r}; the stages are {list(STAGES)}")
        if name not in self._results:
            self._results[name] = self._compute(STAGES[name])
        return self._results[name]

    def earlier(self, name: str) -> dict[str, Any]:
        """The outcomes of the stages stage ``name`` needs and uses, by name (a result, or
        :class:`~lexprobe.stages.registry.Skipped`): what its report sets its own result beside."""
        stage = STAGES[name]
        return {n: self.outcome(n) for n in (*stage.needs, *stage.uses)}

    def refusal(self, stage: Stage[Any]) -> str | None:
        """Why ``stage`` refuses this study (a setting it cannot honour changed from its default), or None."""
        defaults = {f.name: f.default for f in fields(self)}
        for setting, why in stage.refuses.items():
            value = getattr(self, setting)
            if value != defaults[setting]:
                shown = value.condition if hasattr(value, "condition") else repr(value)
                return f"{stage.label} refuses {setting}={shown}: {why}"
        return None

    def seen_by(self, stage: Stage[Any]) -> StageSettings:
        """This study as ``stage`` sees it: the shared inputs and the settings it reads (others refused)."""
        return StageSettings(self, stage, frozenset(f.name for f in fields(self)))

    def _compute(self, stage: Stage[Any]) -> tuple[Any, str | None]:
        """A stage's outcome and cache key: refused (a setting it cannot honour) before any work, skipped when a
        stage it needs was or it has nothing to show, else run or read from the stage cache. A skipped outcome's key
        is its reason, so a stage that uses it is cached by it."""
        refused = self.refusal(stage)
        if refused is not None:
            return Skipped(stage.name, refused), f"skipped: {refused}"
        earlier = {n: self._keyed(n) for n in (*stage.needs, *stage.uses)}
        view = self.seen_by(stage)
        results = {n: r for n, (r, _) in earlier.items()}
        missing = next((results[n] for n in stage.needs if isinstance(results[n], Skipped)), None)
        if missing is not None:
            reason = f"needs {missing.stage}, skipped: {missing.reason}"
            return Skipped(stage.name, reason), f"skipped: {reason}"
        why = stage.skip(view, results)
        if why is not None:
            return Skipped(stage.name, why), f"skipped: {why}"
        prepared = stage.prepare(view, results)

        def key() -> dict[str, Any] | None:
            units = [self._units(r) for r in prepared.reads]
            if None in units or any(k is None for _, k in earlier.values()):
                return None
            st = self.settings()
            return {"shared": {k: st[k] for k in ("suite", "stimuli", "steps", "config")},
                    "scoring": asdict(self.scoring), "settings": {r: st[r] for r in stage.reads},
                    "earlier": {n: k for n, (_, k) in earlier.items()}, "units": fingerprint({"u": units}),
                    "inputs": prepared.inputs}

        given = stage.given_values(view)
        return self._cached(stage.name, stage.result, key, given, type(stage).__module__,
                            lambda: stage.run(view, results, prepared))

    def _cached(self, name: str, cls: type[S], key: Callable[[], dict[str, Any] | None], given: dict[str, Any],
                module: str, compute: Callable[[], S]) -> tuple[S, str | None]:
        """A result from the stage cache or ``compute()``, with its cache key. ``key()`` gives the inputs it
        depends on (None while one of them is not stored, e.g. a skipped checkpoint: then nothing is cached);
        after computing it is asked again, since computing may have measured the inputs. ``module``'s code and
        the code it imports join the key."""
        cache = StageCache(str(self.root))
        where = (self.checkpoint_suite.name, self.stimulus_set.name, name)
        started = time.perf_counter()
        inputs = key() if self.cache else None
        if inputs is not None:
            k = key_of(module, stage=name, **inputs)
            hit = cache.get(cls, (*where, k), given)
            if hit is not None:
                self.timings[name] = {"seconds": time.perf_counter() - started, "cached": True}
                return hit, k
        result = compute()
        inputs = key() if self.cache else None
        stored = None
        if inputs is not None:
            stored = key_of(module, stage=name, **inputs)
            cache.put(result, (*where, stored), tuple(given), inputs)
        self.timings[name] = {"seconds": time.perf_counter() - started, "cached": False}
        return result, stored

    def _units(self, r: Reads) -> str | None:
        suite = self.checkpoint_suite
        return units_fingerprint(self.store, r.measurement, suite.name, r.stimuli, list(r.conditions),
                                 list(r.models or suite.models), [int(s) for s in (r.seeds or suite.seeds)],
                                 list(r.steps))

    def derived(self, name: str, step: int, make: Callable[[], dict[str, Stimuli]]) -> dict[str, Stimuli]:
        """Stimulus sets derived with the tokenizer of the suite's first model and seed at ``step`` (stage 3's
        perturbed sets, stage 4's counterfactual), from the stage cache while the stimuli, that tokenizer's files
        (hashed on disk, not loaded) and the perturbation data are the ones they were made from."""
        suite = self.checkpoint_suite
        tokenizer = tokenizer_identity(suite.checkpoint(suite.models[0], suite.seeds[0], step))

        def key() -> dict[str, Any] | None:
            return None if tokenizer is None else {"stimuli": self.stimulus_set.hash, "tokenizer": tokenizer,
                                                   "data": data_fingerprint()}

        return self._cached(name, StimulusSets, key, {}, DERIVING, lambda: StimulusSets(make()))[0].sets

    @classmethod
    def setting_uses(cls) -> pd.DataFrame:
        """How every stage treats every setting (setting, stage, use): ``refused`` (with why: a study that changes it
        gets no result from that stage), ``reads`` (in its cache key), ``shared`` (the suite, stimuli, checkpoints,
        engine dtype, best-layer rule and baseline condition every stage measures and scores by), ``via STAGE``
        (an earlier stage it needs reads it), ``where`` (where results live, how work is run or batched: never a
        number) or ``not used``. Worked out from the stages' declarations; ``tests/test_study.py`` holds them
        against what the stages do."""
        rows = []
        for stage in STAGES.values():
            for f in fields(cls):
                rows.append({"setting": f.name, "stage": stage.name, "use": _use(f.name, stage)})
        return pd.DataFrame(rows)

    inflection = StageMember[Inflection]("inflection")
    discovery = StageMember[Discovery]("discovery")
    perturbation = StageMember[Perturbation]("perturbation")
    causal = StageMember[Causal]("causal")
    replication = StageMember[Replication]("replication")
    validation = StageMember[Validation]("validation")
