"""Sweeps on Dask (``dask.distributed``): every unit (model, seed, step, condition) is one task.

``--scheduler dask`` starts a :class:`~distributed.LocalCluster` on this machine (one single-threaded worker
process per core unless ``--workers`` says otherwise); ``--scheduler dask:ADDRESS`` connects to a running
scheduler (``tcp://host:8786``), e.g. one started by ``dask-jobqueue`` on Slurm (recipes in the README). Workers
write each unit's tables to the shared results store themselves (atomic writes, the sidecar last), so results
never travel through the scheduler; units already in the store are skipped before anything is submitted. A worker
that dies takes only its running unit with it: the scheduler hands that task to another worker (up to
``distributed.scheduler.allowed-failures`` deaths per task), and a task that raises is retried once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from distributed import Client

    from lexprobe.suites import Checkpoint
    from lexprobe.sweep import SweepJob


def parse_scheduler(spec: str) -> str | None:
    """The scheduler address of a ``dask[:ADDRESS]`` spec (None: a local cluster); ValueError for anything else."""
    if spec == "dask":
        return None
    if spec.startswith("dask:") and len(spec) > 5:
        return spec[5:]
    raise ValueError(f"bad --scheduler {spec!r}: use serial, dask or dask:ADDRESS (e.g. dask:tcp://host:8786)")


@contextmanager
def dask_client(address: str | None, n_workers: int | None = None) -> Iterator[Client]:
    """A client of the scheduler at ``address``, or of a fresh local cluster of single-threaded worker processes."""
    from distributed import Client, LocalCluster

    if address is not None:
        with Client(address) as client:
            yield client
        return
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            yield client


def _run_unit(job: SweepJob, ck: Checkpoint) -> dict:
    return job.run(ck)


def run_dask(job: SweepJob, cks: list[Checkpoint], scheduler: str = "dask", n_workers: int | None = None,
             progress: bool = True, client: Client | None = None) -> list[dict]:
    """Run a sweep's units as Dask tasks (on ``client`` when given); returns one status row per checkpoint."""
    from distributed import as_completed

    rows = {ck: job.cached(ck) for ck in cks}
    todo = [ck for ck in cks if rows[ck] is None]
    if todo:
        with dask_client(parse_scheduler(scheduler), n_workers) if client is None else nullcontext(client) as c:
            shared = c.scatter(job, broadcast=True)
            futures = {c.submit(_run_unit, shared, ck, retries=1, pure=False): ck for ck in todo}
            bar = tqdm(total=len(cks), initial=len(cks) - len(todo), desc=f"{job.suite.name} units on dask",
                       disable=not progress)
            for fut in as_completed(futures):
                ck = futures[fut]
                rows[ck] = fut.result()
                if rows[ck]["status"] == "measured":
                    bar.set_postfix_str(f"{ck.model} seed{ck.seed} step{ck.step}: load "
                                        f"{rows[ck]['load_seconds']:.1f}s, measure {rows[ck]['measure_seconds']:.1f}s")
                elif rows[ck]["status"] == "skipped":
                    warnings.warn(f"skipped {ck.label}: {rows[ck]['reason']}", stacklevel=2)
                bar.update()
            bar.close()
    return [rows[ck] for ck in cks]
