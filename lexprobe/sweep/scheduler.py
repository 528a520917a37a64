"""Sweeps on Dask (``dask.distributed``): every checkpoint (model, seed, step, with all its conditions) is one task.

``--scheduler dask`` starts a :class:`~distributed.LocalCluster` on this machine (one single-threaded worker
process per core); ``--scheduler dask:ADDRESS`` connects to a running
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
from typing import TYPE_CHECKING, Protocol

from lexprobe.base.progress import tqdm

if TYPE_CHECKING:
    from distributed import Client

    from lexprobe.checkpoints.suites import Checkpoint, Suite
    from lexprobe.store.results import Unit


class SweepJob(Protocol):
    """What a sweep hands the scheduler or the pool (:class:`lexprobe.sweep.run.SweepJob`; named here, not imported:
    the sweep imports both)."""

    @property
    def suite(self) -> Suite: ...  # read-only: the sweep's job is a frozen dataclass

    def split(self, ck: Checkpoint) -> tuple[list[dict], list]: ...

    def run(self, ck: Checkpoint, only: frozenset[Unit] | None = None) -> list[dict]: ...


def parse_scheduler(spec: str) -> str | None:
    """The scheduler address of a ``dask[:ADDRESS]`` spec (None: a local cluster); ValueError for anything else."""
    if spec == "dask":
        return None
    if spec.startswith("dask:") and len(spec) > 5:
        return spec[5:]
    raise ValueError(f"bad --scheduler {spec!r}: use auto, pool, serial, dask or dask:ADDRESS (e.g. "
                     "dask:tcp://host:8786)")


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


def _run_unit(job: SweepJob, ck: Checkpoint) -> list[dict]:
    return job.run(ck)


def run_dask(job: SweepJob, cks: list[Checkpoint], scheduler: str = "dask", n_workers: int | None = None,
             progress: bool = True, client: Client | None = None) -> list[dict]:
    """Run a sweep's checkpoints as Dask tasks (on ``client`` when given); one status row per (checkpoint,
    condition)."""
    from distributed import as_completed

    split = {ck: job.split(ck) for ck in cks}
    rows = {ck: done for ck, (done, _) in split.items()}
    todo = [ck for ck in cks if split[ck][1]]
    if todo:
        with dask_client(parse_scheduler(scheduler), n_workers) if client is None else nullcontext(client) as c:
            shared = c.scatter(job, broadcast=True)
            futures = {c.submit(_run_unit, shared, ck, retries=1, pure=False): ck for ck in todo}
            bar = tqdm(total=len(cks), initial=len(cks) - len(todo), desc=f"{job.suite.name} checkpoints on dask",
                       disable=not progress)
            for fut in as_completed(futures):
                ck = futures[fut]
                rows[ck] = fut.result()
                measured = [r for r in rows[ck] if r["status"] == "measured"]
                if measured:
                    bar.set_postfix_str(f"{ck.model} seed{ck.seed} step{ck.step}: load "
                                        f"{measured[0]['load_seconds']:.1f}s, measure "
                                        f"{sum(r['measure_seconds'] for r in measured):.1f}s")
                skipped = [r for r in rows[ck] if r["status"] == "skipped"]
                if skipped:
                    warnings.warn(f"skipped {ck.label}: {skipped[0]['reason']}", stacklevel=2)
                bar.update()
            bar.close()
    return [r for ck in cks for r in rows[ck]]
