"""Sweep a suite's checkpoints through the engine into the results store (resumable, skips bad checkpoints).

Serially, checkpoint k+1 is read and validated in a background thread while the engine measures checkpoint k
(:mod:`lexprobe.prefetch`); ``scheduler="dask"`` makes every unit a Dask task instead (:mod:`lexprobe.scheduler`).
"""

from __future__ import annotations

import gc
import logging
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from lexprobe.device import resolve_device, torch_dtype
from lexprobe.extract import MEASUREMENTS, ExtractConfig, LayerHook, measure
from lexprobe.paths import results_dir
from lexprobe.prefetch import prefetched
from lexprobe.stimuli import Stimuli
from lexprobe.store import ResultsStore, StoreConflict, Unit, fingerprint
from lexprobe.suites import (Checkpoint, CheckpointUnavailable, Loaded, Suite, cached_commit, load_checkpoint,
                             suite_metadata)

log = logging.getLogger(__name__)


def run_fingerprint(suite: Suite, stimuli: Stimuli, config: ExtractConfig, condition: str) -> str:
    """Fingerprint of everything that determines a unit's numbers (a retrained organism changes it too)."""
    return fingerprint({"stimuli": stimuli.hash, "config": config.fingerprint_fields(), "condition": condition,
                        "suite": suite.identity()})


@dataclass(frozen=True)
class SweepJob:
    """What measuring one checkpoint into the store needs; picklable, so a Dask worker can run units too."""

    suite: Suite
    stimuli: Stimuli
    root: str
    config: ExtractConfig = ExtractConfig()
    condition: str = "intact"
    hook: LayerHook | None = None
    evict: bool = False

    @cached_property
    def store(self) -> ResultsStore:
        return ResultsStore(self.root)

    @cached_property
    def measurements(self) -> tuple[str, ...]:
        return tuple(m for m in MEASUREMENTS if m != "embeddings" or self.config.save_embeddings)

    @cached_property
    def fp(self) -> str:
        return run_fingerprint(self.suite, self.stimuli, self.config, self.condition)

    def unit(self, ck: Checkpoint) -> Unit:
        return Unit.of(ck, self.stimuli.name, self.condition)

    def cached(self, ck: Checkpoint) -> dict | None:
        """The status row of a unit already in the store (evicting its files if asked), else None."""
        unit = self.unit(ck)
        if not self.store.is_done(unit, self.measurements, self.fp):
            return None
        stored, now = self.store.sidecar(unit, self.measurements[0])["commit"], cached_commit(ck)
        if now is not None and stored != now:
            raise StoreConflict(f"{ck.label}: results were measured on commit {stored}, but {ck.revision} now "
                                f"points to {now}; delete {self.store.dir(unit)} or use another --out")
        self._evict(ck)
        return {**unit.__dict__, "status": "cached", "reason": ""}

    def load(self, ck: Checkpoint) -> Loaded:
        """Load and validate one checkpoint in the configured dtype and device (recording downloads to evict)."""
        from lexprobe.evict import recording

        with recording(ck) if self.evict and ck.repo else nullcontext():
            return load_checkpoint(ck, torch_dtype(self.config.dtype), self.config.device)

    def measure(self, loaded: Loaded, load_seconds: float, progress: bool = False) -> dict:
        """Measure a loaded checkpoint, store its tables (sidecars record load and measure time), evict."""
        ck = loaded.checkpoint
        unit = self.unit(ck)
        t0 = time.perf_counter()
        tables = measure(loaded.model, loaded.tokenizer, self.stimuli, self.config, self.hook, progress)
        seconds = {"load_seconds": round(load_seconds, 3), "measure_seconds": round(time.perf_counter() - t0, 3)}
        meta = {"fingerprint": self.fp, "config": self.config.as_dict(),
                "stimuli": {"name": self.stimuli.name, "hash": self.stimuli.hash},
                "checkpoint": ck.__dict__, "commit": loaded.commit, "weights_hash": loaded.weights_hash,
                "n_layers": loaded.n_layers, "n_heads": loaded.n_heads, "suite": suite_metadata(self.suite),
                **seconds}
        self.store.write(unit, tables, meta)
        self._evict(ck)
        return {**unit.__dict__, "status": "measured", "reason": "", **seconds}

    def skip(self, ck: Checkpoint, err: CheckpointUnavailable) -> dict:
        """Log and record a checkpoint that could not be loaded (retried on the next run)."""
        warnings.warn(f"skipping {ck.label}: {err}", stacklevel=3)
        log.warning("skipping %s: %s", ck.label, err)
        self.store.write_skipped(self.unit(ck), str(err))
        return {**self.unit(ck).__dict__, "status": "skipped", "reason": str(err)}

    def run(self, ck: Checkpoint) -> dict:
        """One whole unit (a Dask task): cached, or load, measure and store, or skip."""
        cached = self.cached(ck)
        if cached is not None:
            return cached
        t0 = time.perf_counter()
        try:
            loaded = self.load(ck)
        except CheckpointUnavailable as err:
            return self.skip(ck, err)
        try:
            return self.measure(loaded, time.perf_counter() - t0)
        finally:
            release(loaded)

    def _evict(self, ck: Checkpoint) -> None:
        if self.evict and ck.repo:
            from lexprobe.evict import evict

            freed = evict(ck)
            log.info("evicted %s: %.1f MB", ck.label, freed / 1e6)


def release(loaded: Loaded) -> None:
    """Free a loaded checkpoint's weights now."""
    del loaded.model
    gc.collect()


def extract(suite: Suite, stimuli: Stimuli, steps: tuple[int, ...] | None = None,
            models: tuple[str, ...] | None = None, seeds: tuple[int, ...] | None = None,
            root: str | Path | None = None, config: ExtractConfig = ExtractConfig(), condition: str = "intact",
            hook: LayerHook | None = None, progress: bool = True, scheduler: str = "serial",
            evict: bool = False) -> pd.DataFrame:
    """Measure every requested checkpoint not already in the store; returns one status row per checkpoint.

    ``condition`` names an intervention (``hook``) so its results sit beside the intact ones. Checkpoints that
    cannot be loaded are logged, recorded as skipped, and retried on the next run. ``scheduler`` is ``serial``
    (next checkpoint loaded while this one is measured) or ``dask`` / ``dask:ADDRESS`` (see
    :mod:`lexprobe.scheduler`). ``evict`` deletes each hub revision's downloaded files once its unit is stored.
    """
    if (hook is None) != (condition == "intact"):
        raise ValueError("pass a hook exactly when condition is not 'intact'")
    config = replace(config, device=resolve_device(config.device))
    job = SweepJob(suite, stimuli, str(root or results_dir()), config, condition, hook, evict)
    cks = suite.checkpoints(steps, models, seeds)
    if scheduler == "serial":
        return pd.DataFrame(run_serial(job, cks, progress))
    from lexprobe.scheduler import run_dask

    return pd.DataFrame(run_dask(job, cks, scheduler, progress=progress))


def run_serial(job: SweepJob, cks: list[Checkpoint], progress: bool = True, overlap: bool = True) -> list[dict]:
    """Run a sweep in this process; finished units are skipped before anything loads."""
    rows = {ck: job.cached(ck) for ck in cks}
    todo = [ck for ck in cks if rows[ck] is None]
    bar = tqdm(total=len(cks), initial=len(cks) - len(todo), desc=f"{job.suite.name} checkpoints",
               disable=not progress)
    waited = 0.0
    t_wait = time.perf_counter()
    for got in prefetched(todo, job.load, release, overlap=overlap):
        ck = got.item
        waited += time.perf_counter() - t_wait
        if isinstance(got.error, CheckpointUnavailable):
            rows[ck] = job.skip(ck, got.error)
        elif got.error is not None:
            raise got.error
        else:
            rows[ck] = job.measure(got.value, got.seconds, progress)
            bar.set_postfix_str(f"{ck.model} seed{ck.seed} step{ck.step}: load {got.seconds:.1f}s, measure "
                                f"{rows[ck]['measure_seconds']:.1f}s, waited on loads {waited:.1f}s in all")
        bar.update()
        t_wait = time.perf_counter()
    bar.close()
    return [rows[ck] for ck in cks]
