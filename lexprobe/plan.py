"""``lexprobe plan``: what a sweep will cost before it starts, worked out offline.

* units: the suite's (model, seed, step) checkpoints for one condition, less those already finished in the store;
* download: Pythia's exact shapes x 2 bytes per parameter (float16 on the hub, see
:mod:`lexprobe.checkpoints.shapes`); a local
  or hub-cache suite downloads nothing;
* results disk and time per unit: a calibration run on this machine. The engine measures the stimuli on random
  weights of the model's width with 1 and 2 layers. Table sizes are exact and linear in depth, so the two depths
  extend to the full one. Times are noisy on a shared machine (a difference of two would amplify the noise), so
  the 2-layer time (fastest of 3 runs) is scaled in proportion to depth, and the 2-layer load (saved in float16,
  read back, validated) in proportion to checkpoint bytes: upper estimates, since fixed costs scale along.
  Calibrations are cached in ``$LEXPROBE_HOME/calibration.json`` per shape, dtype, device, threads, batch size
  and stimuli. Sentences are tokenized one token per word (:func:`lexprobe.checkpoints.shapes.word_tokenizer`).

Per stage of a study (:func:`study_plan`): what each of a study's stages will cost, worked out offline from its
settings (``lexprobe plan``).

Per stage: each registered stage costs itself (:meth:`~lexprobe.stages.registry.Stage.cost`, from a
:class:`~lexprobe.stages.costs.Costing` of this calibration): units measured ((checkpoint, condition) pairs), forward
passes (sentences run through a model), files and disk in the packed results store (:mod:`lexprobe.store.pack`: per
checkpoint folder a manifest and one part per measurement and column set), and time on this machine's sweep
workers. Stage 3 scales the main set's calibration by its perturbed sets' sentences and pairs; stage 4 costs its own
design on stand-in discovery results (``assumed_heads`` passing heads per seed: the real ones are known only after
stage 2), each condition saying what it costs in intact forward passes
(:meth:`~lexprobe.engine.conditions.Condition.cost`), and its greedy searches at the checkpoints its own rule picks;
validation costs its construct check on a suite with a plant. A stage that only reads stored tables costs no forward
pass (its stage cache entry is counted).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from lexprobe.base.files import atomic_write
from lexprobe.base.paths import home, results_dir
from lexprobe.checkpoints.shapes import TOKENIZER_BYTES, checkpoint_bytes, pythia_config, random_model, word_tokenizer
from lexprobe.checkpoints.suites import Suite, load_config, validate_model
from lexprobe.engine.config import ENGINE_VERSION, MEASUREMENTS, ExtractConfig
from lexprobe.engine.device import resolve_device, torch_dtype
from lexprobe.engine.extract import measure
from lexprobe.stages import STAGES
from lexprobe.stages.costs import Costing, ModelCost, StageCost, stage_cache_files
from lexprobe.stimuli.tables import Stimuli
from lexprobe.store.results import ResultsStore, Unit
from lexprobe.study import Study
from lexprobe.sweep.pool import workers

if TYPE_CHECKING:
    from lexprobe.checkpoints.suites import Tokenizer


class Calibration(TypedDict):
    """One depth's calibration: seconds to measure the stimuli and to load the checkpoint, its file bytes, and the
    bytes of each result table."""

    measure_seconds: float
    load_seconds: float
    file_bytes: int
    table_bytes: dict[str, int]


@dataclass(frozen=True)
class UnitCost:
    """Estimated cost of one unit of a model: seconds to load (from disk) and to measure, bytes of each result
    table, and of the tables the config keeps."""

    load_seconds: float
    measure_seconds: float
    table_bytes: dict[str, float]
    result_bytes: int


def model_shape(suite: Suite, model: str, shape: PretrainedConfig | None = None) -> tuple[PretrainedConfig, int]:
    """A model's config and its download bytes per checkpoint (0 when the checkpoints are already local);
    ``shape``: the config of a suite that is not there yet (an organism before training)."""
    if shape is not None:
        return shape, 0
    if suite.name.startswith("pythia"):
        return pythia_config(model), checkpoint_bytes(model)
    published = suite.metadata.get("config")
    if published and not suite.offline:  # a named suite not downloaded yet: its published shape
        cfg = AutoConfig.for_model(**published)
        params = sum(p.numel() for p in _meta_model(cfg).parameters())
        return cfg, params * int(suite.metadata["bytes_per_param"]) + TOKENIZER_BYTES
    return load_config(suite.checkpoint(model, suite.seeds[0], suite.steps[0])), 0


def _timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _calibrate_depth(cfg: PretrainedConfig, layers: int, stimuli: Stimuli, tok: Tokenizer, config: ExtractConfig,
                     folder: Path) -> Calibration:
    """Measure and load times and per-table bytes for a random model of ``cfg``'s width with ``layers`` layers."""
    shape = type(cfg)(**{**cfg.to_dict(), "num_hidden_layers": layers, "vocab_size": len(tok), "bos_token_id": None,
                         "eos_token_id": None, "pad_token_id": None})  # the published ids lie outside our vocab
    shape._attn_implementation = "eager"
    # transformers types PreTrainedModel.to as a functools.wraps wrapper, which mypy does not bind to the instance
    model = random_model(shape).to(torch_dtype(config.dtype)).to(config.device)  # type: ignore[arg-type]
    tables = measure(model, tok, stimuli, config, progress=False)
    measure_s = _timed(functools.partial(measure, model, tok, stimuli, config, progress=False))
    sizes = {}
    for name, df in tables.items():
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        sizes[name] = len(buf.getvalue())
    path = folder / f"layers{layers}"
    model.half().save_pretrained(path)
    del model

    def load() -> None:
        m = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch_dtype(config.dtype))
        validate_model(m.to(config.device), "calibration")  # type: ignore[arg-type]  # as for .to above

    load_s = _timed(load)
    file_bytes = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    return {"measure_seconds": measure_s, "load_seconds": load_s, "file_bytes": file_bytes, "table_bytes": sizes}


def engine_threads() -> int:
    """Torch threads of one sweep worker: 1 in the default pool of worker processes, else this process's."""
    return 1 if workers() > 1 else torch.get_num_threads()


def calibrate(cfg: PretrainedConfig, stimuli: Stimuli, config: ExtractConfig) -> dict[str, Calibration]:
    """Engine and load timings at depth 1 and 2 for ``cfg``'s width on this machine, every table kept (cached)."""
    config = replace(config, save_heads=True, save_embeddings=True)
    threads = engine_threads()
    ffn = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None)
    key = json.dumps({"tables": list(MEASUREMENTS), "hidden": cfg.hidden_size, "heads": cfg.num_attention_heads,
                      "ffn": ffn, "dtype": config.dtype, "device": config.device,
                      "threads": threads, "batch": config.batch_size, "stimuli": stimuli.hash,
                      "engine": ENGINE_VERSION, "torch": torch.__version__}, sort_keys=True)
    cache = home() / "calibration.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in known:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tok = word_tokenizer(stimuli)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                known[key] = {str(n): _calibrate_depth(cfg, n, stimuli, tok, config, Path(tmp)) for n in (1, 2)}
        finally:
            torch.set_num_threads(before)
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, json.dumps(known, indent=1).encode())
    return known[key]


def _linear(at1: float, at2: float, x: float) -> float:
    """The line through (1, at1) and (2, at2), at x (never below zero)."""
    return max(0.0, at1 + (at2 - at1) * (x - 1))


def unit_cost(cfg: PretrainedConfig, download_bytes: int, stimuli: Stimuli, config: ExtractConfig) -> UnitCost:
    """One unit's estimated load time (from disk), measure time and result bytes, from the calibration."""
    cal = calibrate(cfg, stimuli, config)
    d1, d2 = cal["1"], cal["2"]
    n_layers = cfg.num_hidden_layers
    full_bytes = download_bytes or _linear(d1["file_bytes"], d2["file_bytes"], n_layers)
    tables = {m: _linear(d1["table_bytes"][m], d2["table_bytes"][m], n_layers) for m in MEASUREMENTS}
    return UnitCost(d2["load_seconds"] * full_bytes / d2["file_bytes"], d2["measure_seconds"] * n_layers / 2,
                    tables, int(sum(tables[m] for m in config.measurements)))


def plan(suite: Suite, stimuli: Stimuli, steps: tuple[int, ...] | None = None, config: ExtractConfig = ExtractConfig(),
         root: str | Path | None = None, bandwidth_mb_s: float = 50.0, shape: PretrainedConfig | None = None) -> str:
    """A plain-text cost estimate of ``lexprobe extract`` (intact condition) over ``suite``: nothing is downloaded,
    trained or loaded, only random weights of each width are measured once to calibrate (cached); ``shape``: the
    model config of a suite that is not there yet."""
    from lexprobe.sweep.run import run_fingerprint

    config = replace(config, device=resolve_device(config.device))
    store = ResultsStore(root or results_dir())
    condition = "intact"
    fp = run_fingerprint(suite, stimuli, config)
    steps = suite.steps if steps is None else steps
    lines = [f"plan: suite {suite.name}, stimuli {stimuli.name} ({len(stimuli.sentences)} sentences, "
             f"{len(stimuli.pairs)} pairs), condition {condition}, {config.dtype} on {config.device}, "
             f"{torch.get_num_threads()} torch threads"]
    totals = {"units": 0, "todo": 0, "download": 0, "results": 0, "seconds": 0.0}
    for model in suite.models:
        cks = suite.checkpoints(steps, (model,))
        done = sum((store.sidecar(Unit.of(ck, stimuli.name, condition), "distances") or {}).get("fingerprint") == fp
                   for ck in cks)
        todo = len(cks) - done
        cfg, dl = model_shape(suite, model, shape)
        cost = unit_cost(cfg, dl, stimuli, config)
        fetch = dl / (bandwidth_mb_s * 1e6)
        # one worker loads, then measures; several share the checkpoints (and one download link)
        per_unit = max(fetch, (cost.load_seconds + cost.measure_seconds) / workers())
        n_params = sum(p.numel() for p in _meta_model(cfg).parameters())
        stored = {2: "float16", 4: "float32"}[int(suite.metadata.get("bytes_per_param", 2))]
        lines += [
            f"{model}: {len(suite.seeds)} seeds x {len(steps)} steps = {len(cks)} units, {done} already stored, "
            f"{todo} to run ({n_params:,} parameters, {cfg.num_hidden_layers} layers x "
            f"{cfg.num_attention_heads} heads)",
            f"  download: {size(dl)} per checkpoint" + (f" ({stored}), {size(dl * todo)} in all; with --evict "
                                                       f"about {size(2 * dl)} on disk at once" if dl else
                                                       " (checkpoints are local)"),
            f"  results: {size(cost.result_bytes)} per unit, {size(cost.result_bytes * todo)} in all",
            f"  time per unit: load {cost.load_seconds:.1f} s from disk"
            + (f" + download {fetch:.1f} s at an assumed {bandwidth_mb_s:g} MB/s" if dl else "")
            + f", measure {cost.measure_seconds:.1f} s on {engine_threads()} torch thread(s); on {workers()} "
              f"worker(s) {per_unit:.1f} s -> {duration(per_unit * todo)} on this machine"]
        for k, v in (("units", len(cks)), ("todo", todo), ("download", dl * todo),
                     ("results", cost.result_bytes * todo), ("seconds", per_unit * todo)):
            totals[k] += v
    if len(suite.models) > 1:
        lines.append(f"total: {totals['units']} units ({totals['todo']} to run), download {size(totals['download'])}"
                     f", results {size(totals['results'])}, {duration(totals['seconds'])}")
    lines.append("calibration: random weights of each width at 1 and 2 layers, extended linearly to the full "
                 f"depth, cached in {home() / 'calibration.json'}")
    return "\n".join(lines)


def _meta_model(cfg: PretrainedConfig) -> torch.nn.Module:
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} PB"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"

def stage_costs(study: Study, assumed_heads: int = 2, shape: PretrainedConfig | None = None) -> list[StageCost]:
    """Every registered stage of ``study`` as it will run, each costed by the stage itself
    (:meth:`~lexprobe.stages.registry.Stage.cost`) from this machine's calibration of each model."""
    suite, stim = study.checkpoint_suite, study.stimulus_set
    models = []
    for model in suite.models:
        cfg, download = model_shape(suite, model, shape)
        cost = unit_cost(cfg, download, stim, study.config)
        models.append(ModelCost(model, cfg.num_hidden_layers, cfg.num_attention_heads, cost.load_seconds,
                                cost.measure_seconds, cost.table_bytes))
    costing = Costing(tuple(models), workers(), assumed_heads)
    out = []
    for stage in STAGES.values():
        c = stage.cost(study.seen_by(stage), costing)
        c.cache = stage_cache_files(stage.result)
        out.append(c)
    return out


def _row(stage: str) -> str:
    """A stage's row name in the plan: '1 inflection', ..., 'validation'."""
    label = STAGES[stage].label if stage in STAGES else stage
    return stage if label == stage else f"{label.removeprefix('stage ')} {stage}"


def study_plan(study: Study, assumed_heads: int = 2, shape: PretrainedConfig | None = None) -> str:
    """A plain-text table of :func:`stage_costs`, with totals."""
    costs = stage_costs(study, assumed_heads, shape)
    suite = study.checkpoint_suite
    lines = [f"stages of a study of {suite.name} ({', '.join(suite.models)}; {len(suite.seeds)} seeds x "
             f"{len(study.checkpoints)} steps), stimuli {study.stimulus_set.name}, from an empty store, on "
             f"{workers()} worker process(es); stage 4 designed as if {assumed_heads} heads pass discovery per seed "
             f"(n_random {study.n_random}, n_random_dev {study.n_random_dev}, map_steps {study.map_steps}, "
             f"perturb_steps {study.perturb_steps})",
             f"  {'stage':16s} {'units':>10s} {'forward passes':>15s} {'files':>8s} {'cache files':>12s} "
             f"{'disk':>10s} {'time':>10s}"]
    total = StageCost("total", *(sum(getattr(c, f.name) for c in costs) for f in dataclasses.fields(StageCost)[1:]))
    for c in [*costs, total]:
        lines.append(f"  {_row(c.stage):16s} {c.units:>10,d} {c.forward:>15,d} {c.files:>8,d} {c.cache:>12,d} "
                     f"{size(c.disk):>10s} {duration(c.seconds):>10s}")
    lines.append("  (a stage with no forward passes only reads stored tables; its time is not estimated; disk counts "
                 "result tables, not the stage cache; validation measures only on a suite with a planted circuit)")
    return "\n".join(lines)
