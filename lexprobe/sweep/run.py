"""Sweep a suite's checkpoints through the engine into the results store (resumable, skips bad checkpoints).

A unit of work is one checkpoint with every condition asked of it (the intact model and each intervention), so a
checkpoint is loaded once for all its conditions; the store keeps one entry per (checkpoint, condition). Serially,
checkpoint k+1 is read and validated in a background thread while the engine measures checkpoint k
(:mod:`lexprobe.sweep.prefetch`); by default, on several cores, checkpoints run on a pool of single-threaded worker
processes (:mod:`lexprobe.sweep.pool`); ``scheduler="dask"`` makes every checkpoint a Dask task instead
(:mod:`lexprobe.sweep.scheduler`).
"""

from __future__ import annotations

import gc
import logging
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import pandas as pd

from lexprobe.base.files import fingerprint
from lexprobe.base.paths import results_dir
from lexprobe.base.progress import tqdm
from lexprobe.checkpoints.integrity import problems
from lexprobe.checkpoints.suites import (
    Checkpoint,
    CheckpointUnavailable,
    Loaded,
    Suite,
    cached_commit,
    load_checkpoint,
    suite_metadata,
)
from lexprobe.engine.conditions import Condition, Donor
from lexprobe.engine.device import resolve_device, torch_dtype
from lexprobe.engine.extract import INTACT, ExtractConfig, Intact
from lexprobe.engine.sites import Sites
from lexprobe.stimuli.tables import Stimuli
from lexprobe.store.results import ResultsStore, StoreConflict, Unit
from lexprobe.sweep.prefetch import prefetched

log = logging.getLogger(__name__)

Todo = tuple[Stimuli, Condition, str, Unit]  # still to measure: stimuli, condition, fingerprint, unit
FLUSH_SECONDS = 30.0  # measured conditions are written at least this often


def run_fingerprint(suite: Suite, stimuli: Stimuli, config: ExtractConfig, condition: Condition = INTACT) -> str:
    """Fingerprint of everything that determines a unit's numbers (a retrained organism changes it too)."""
    fields = {"stimuli": stimuli.hash, "config": config.fingerprint_fields(), "condition": condition.condition,
              "suite": suite.identity()}
    if not isinstance(condition, Intact):
        fields["intervention"] = condition.spec()
    return fingerprint(fields)


@dataclass(frozen=True)
class SweepJob:
    """What measuring one checkpoint's conditions into the store needs; picklable, so a Dask worker can run it.
    ``stimuli`` is one stimulus set or several (e.g. stage 3's perturbed sets): every set is measured under every
    condition, all from one load of the checkpoint."""

    suite: Suite
    stimuli: Stimuli | tuple[Stimuli, ...]
    root: str
    config: ExtractConfig = ExtractConfig()
    conditions: tuple[Condition, ...] = (INTACT,)
    evict: bool = False

    @cached_property
    def store(self) -> ResultsStore:
        return ResultsStore(self.root)

    @cached_property
    def sets(self) -> tuple[Stimuli, ...]:
        return self.stimuli if isinstance(self.stimuli, tuple) else (self.stimuli,)

    @cached_property
    def plans(self) -> list[tuple[Stimuli, Condition, str]]:
        return [(st, c, run_fingerprint(self.suite, st, self.config, c)) for st in self.sets for c in self.conditions]

    def split(self, ck: Checkpoint) -> tuple[list[dict], list[Todo]]:
        """Status rows of the checkpoint's conditions already in the store, and the conditions still to measure
        (a checkpoint with nothing left to measure has its downloaded files evicted, if asked)."""
        done, todo = [], []
        for st, cond, fp in self.plans:
            unit = Unit.of(ck, st.name, cond.condition)
            if not self.store.is_done(unit, cond.measurements(self.config), fp):
                todo.append((st, cond, fp, unit))
                continue
            side = self.store.sidecar(unit, cond.measurements(self.config)[0])
            assert side is not None  # is_done found it
            stored, now = side["commit"], cached_commit(ck)
            if now is not None and stored != now:
                raise StoreConflict(f"{ck.label}: results were measured on commit {stored}, but {ck.revision} now "
                                    f"points to {now}; delete {self.store.dir(unit)} or use another --out")
            done.append({**unit.__dict__, "status": "cached", "reason": ""})
        if not todo:
            self._evict(ck)
        return done, todo

    def load(self, ck: Checkpoint) -> Loaded:
        """Load and validate one checkpoint in the configured dtype and device (recording downloads to evict)."""
        from lexprobe.checkpoints.evict import recording

        with recording(ck) if self.evict and ck.repo else nullcontext():
            return load_checkpoint(ck, torch_dtype(self.config.dtype), self.config.device)

    def donor(self, ck: Checkpoint, condition: Condition, n_layers: int, known: dict[int, Donor]) -> Donor | None:
        """QKV weights (every layer, from the site table) of the checkpoint a condition copies from (same model and
        seed), if it copies any; ``known`` keeps those already loaded for this checkpoint, by step."""
        step = condition.donor_step
        if step is None:
            return None
        if step not in known:
            loaded = self.load(self.suite.checkpoint(ck.model, ck.seed, step))
            try:
                known[step] = Sites(None, loaded.model).qk_weights(set(range(n_layers)))
            finally:
                release(loaded)
        return known[step]

    def measure(self, loaded: Loaded, todo: list[Todo], load_seconds: float, progress: bool = False) -> list[dict]:
        """Measure a loaded checkpoint under each condition still to do and store the tables (sidecars record the
        load and measure times): conditions are written together every FLUSH_SECONDS, so a killed run loses at most
        that much work, and the checkpoint's parts are merged at the end; evict its downloaded files afterwards,
        if asked."""
        ck, rows = loaded.checkpoint, []
        donors: dict[int, Donor] = {}
        pending: dict[Path, list[tuple[Unit, dict[str, pd.DataFrame], dict]]] = {}
        flushed = time.perf_counter()
        for st, cond, fp, unit in todo:
            t0 = time.perf_counter()
            tables = cond.measure(loaded.model, loaded.tokenizer, st, self.config,
                                self.donor(ck, cond, loaded.n_layers, donors), progress)
            seconds = {"load_seconds": round(load_seconds, 3), "measure_seconds": round(time.perf_counter() - t0, 3)}
            meta = {"fingerprint": fp, "config": self.config.as_dict(),
                    "stimuli": {"name": st.name, "hash": st.hash},
                    "intervention": None if isinstance(cond, Intact) else cond.spec(),
                    "checkpoint": ck.__dict__, "commit": loaded.commit, "weights_hash": loaded.weights_hash,
                    "n_layers": loaded.n_layers, "n_heads": loaded.n_heads, "suite": suite_metadata(self.suite),
                    **seconds}
            pending.setdefault(self.store.dir(unit), []).append((unit, tables, meta))
            rows.append({**unit.__dict__, "status": "measured", "reason": "", **seconds})
            if time.perf_counter() - flushed >= FLUSH_SECONDS:
                self._flush(pending)
                flushed = time.perf_counter()
        self._flush(pending)
        for unit in {self.store.dir(u): u for *_, u in todo}.values():
            self.store.compact(unit)
        self._evict(ck)
        return rows

    def _flush(self, pending: dict[Path, list[tuple[Unit, dict[str, pd.DataFrame], dict]]]) -> None:
        for entries in pending.values():
            self.store.write_many(entries)
        pending.clear()

    def skip(self, ck: Checkpoint, todo: list[Todo], err: CheckpointUnavailable) -> list[dict]:
        """Log and record a checkpoint that could not be loaded (retried on the next run)."""
        warnings.warn(f"skipping {ck.label}: {err}", stacklevel=3)
        log.warning("skipping %s: %s", ck.label, err)
        for *_, unit in todo:
            self.store.write_skipped(unit, str(err))
        return [{**unit.__dict__, "status": "skipped", "reason": str(err)} for *_, unit in todo]

    def defective(self, ck: Checkpoint, why: str) -> list[dict]:
        """Status rows of a checkpoint with a defect (:mod:`lexprobe.checkpoints.integrity`): skipped, also the
        units an earlier run stored of it (their tables stay in the store; the stages leave them out)."""
        done, todo = self.split(ck)
        return ([{**row, "status": "skipped", "reason": why} for row in done]
                + self.skip(ck, todo, CheckpointUnavailable(why)))

    def run(self, ck: Checkpoint, only: frozenset[Unit] | None = None) -> list[dict]:
        """One checkpoint (a Dask or pool task): its cached conditions, and the others (of ``only``, when given)
        loaded, measured and stored (or skipped)."""
        done, todo = self.split(ck)
        todo = [t for t in todo if only is None or t[3] in only]
        if not todo:
            return done
        t0 = time.perf_counter()
        try:
            loaded = self.load(ck)
        except CheckpointUnavailable as err:
            return done + self.skip(ck, todo, err)
        try:
            return done + self.measure(loaded, todo, time.perf_counter() - t0)
        finally:
            release(loaded)

    def _evict(self, ck: Checkpoint) -> None:
        if self.evict and ck.repo:
            from lexprobe.checkpoints.evict import evict

            freed = evict(ck)
            log.info("evicted %s: %.1f MB", ck.label, freed / 1e6)


COLLECT_BYTES = 256 * 2**20  # weights from which a released model is collected at once


def release(loaded: Loaded) -> None:
    """Free a loaded checkpoint's weights: at once (a full collection) for a model of ``COLLECT_BYTES`` or more,
    whose reference cycles would otherwise hold its weights until the next automatic collection; a smaller one's
    are left to the automatic collector, since a full collection in a busy process costs about 0.2 s and a sweep
    of a small model releases a checkpoint every second or two."""
    big = sum(p.numel() * p.element_size() for p in loaded.model.parameters()) >= COLLECT_BYTES
    del loaded.model
    if big:
        gc.collect()


def extract(suite: Suite, stimuli: Stimuli | Sequence[Stimuli], steps: tuple[int, ...] | None = None,
            models: tuple[str, ...] | None = None, seeds: tuple[int, ...] | None = None,
            root: str | Path | None = None, config: ExtractConfig = ExtractConfig(),
            conditions: Sequence[Condition] = (INTACT,), progress: bool = True,
            scheduler: str = "auto", evict: bool = False) -> pd.DataFrame:
    """Measure every requested (checkpoint, condition) not already in the store; one status row per pair.

    ``conditions`` lists the conditions to measure (:data:`~lexprobe.engine.conditions.INTACT`, interventions, patch
    maps), on one stimulus set or on each
    of several; each checkpoint is loaded once for all of them. Checkpoints that cannot be loaded are logged,
    recorded as skipped, and retried on the next run. ``scheduler`` is ``auto`` (``pool`` on a machine with
    several cores, else ``serial``), ``pool`` (single-threaded worker processes, see :mod:`lexprobe.sweep.pool`),
    ``serial`` (in this process; next checkpoint loaded while this one is measured) or ``dask`` / ``dask:ADDRESS``
    (see :mod:`lexprobe.sweep.scheduler`). ``evict`` deletes each hub revision's downloaded files once all its
    conditions are stored.
    """
    from lexprobe.sweep.pool import run_pool, workers

    if scheduler == "auto":
        scheduler = "pool" if workers() > 1 else "serial"
    if scheduler not in ("serial", "pool"):
        from lexprobe.sweep.scheduler import parse_scheduler, run_dask

        parse_scheduler(scheduler)  # a bad spec fails before any work, even when everything is cached
    config = replace(config, device=resolve_device(config.device))
    sets = stimuli if isinstance(stimuli, Stimuli) else tuple(stimuli)
    job = SweepJob(suite, sets, str(root or results_dir()), config, tuple(conditions), evict)
    cks = suite.checkpoints(steps, models, seeds)
    bad = problems(cks, suite.metadata.get("model_type"))  # defects on disk: skipped before anything loads
    rows = [row for ck, why in bad.items() for row in job.defective(ck, why)]
    cks = [ck for ck in cks if ck not in bad]
    if scheduler == "serial":
        return pd.DataFrame(rows + run_serial(job, cks, progress))
    if scheduler == "pool":
        return pd.DataFrame(rows + run_pool(job, cks, workers(), progress))
    return pd.DataFrame(rows + run_dask(job, cks, scheduler, progress=progress))


def run_serial(job: SweepJob, cks: list[Checkpoint], progress: bool = True, overlap: bool = True) -> list[dict]:
    """Run a sweep in this process; checkpoints with every condition stored are skipped before anything loads."""
    split = {ck: job.split(ck) for ck in cks}
    todo = [ck for ck in cks if split[ck][1]]
    rows = {ck: done for ck, (done, _) in split.items()}
    bar = tqdm(total=len(cks), initial=len(cks) - len(todo), desc=f"{job.suite.name} checkpoints",
               disable=not progress)
    waited = 0.0
    t_wait = time.perf_counter()
    for got in prefetched(todo, job.load, release, overlap=overlap):
        ck = got.item
        waited += time.perf_counter() - t_wait
        if isinstance(got.error, CheckpointUnavailable):
            rows[ck] = rows[ck] + job.skip(ck, split[ck][1], got.error)
        elif got.error is not None:
            raise got.error
        else:
            assert got.value is not None  # a load that raised nothing returned the checkpoint
            new = job.measure(got.value, split[ck][1], got.seconds, progress)
            rows[ck] = rows[ck] + new
            bar.set_postfix_str(f"{ck.model} seed{ck.seed} step{ck.step}: load {got.seconds:.1f}s, measure "
                                f"{sum(r['measure_seconds'] for r in new):.1f}s, waited on loads {waited:.1f}s in all")
        bar.update()
        t_wait = time.perf_counter()
    bar.close()
    return [r for ck in cks for r in rows[ck]]
