"""Sweeps on a pool of worker processes on this machine, one torch thread each (the default on 2+ cores).

Separate single-threaded processes beat one process with several torch threads on these small matrices. A task is
one checkpoint with a share of its conditions: a sweep with fewer checkpoints than twice the worker count (stage 4
at the last checkpoint: one checkpoint, hundreds of conditions) splits each checkpoint's conditions into that many
shares, each loading the checkpoint itself; the store's folder lock lets the shares of one checkpoint write side by
side. The pool is started on first use (``spawn``: the workers import lexprobe afresh) and kept for the rest of the
process, so the many small sweeps of a study pay the start once. ``LEXPROBE_WORKERS`` sets the worker count
(default: one per CPU core; 1 runs sweeps in this process). A spawned worker runs the main script again as it starts;
a sweep that such a run would reach again (a script calling lexprobe outside ``if __name__ == "__main__":``) runs in
this process instead, with one warning.
"""

from __future__ import annotations

import ast
import atexit
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import cache
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from lexprobe.base.progress import tqdm
from lexprobe.store.results import KEY_COLUMNS, Unit

if TYPE_CHECKING:
    from lexprobe.checkpoints.suites import Checkpoint
    from lexprobe.sweep.scheduler import SweepJob

_POOL: dict[int, ProcessPoolExecutor] = {}
T = TypeVar("T")
R = TypeVar("R")


MAIN_GUARDS = ("__name__ == '__main__'", "'__main__' == __name__")  # ast.unparse of a main guard's test


def workers() -> int:
    """Worker processes a sweep uses: ``LEXPROBE_WORKERS``, else one per CPU core; 1 (this process) where a worker
    would run this very call again as it starts (:func:`_rerun_by_workers`)."""
    env = os.environ.get("LEXPROBE_WORKERS", "")
    if env and (not env.isdigit() or int(env) < 1):
        raise ValueError(f"LEXPROBE_WORKERS={env!r}: use a whole number of worker processes, at least 1")
    n = int(env) if env else len(os.sched_getaffinity(0))
    if n > 1 and _rerun_by_workers():
        _warn_in_process(n)
        return 1
    return n


@cache
def _warn_in_process(n: int) -> None:
    """Say, once per process, that sweeps run in this process instead of on ``n`` workers, and why."""
    warnings.warn(f"lexprobe runs this script's sweeps in this process, not on {n} worker processes: the script "
                  "calls lexprobe at its top level, and each worker would run it again as it starts (workers are "
                  "spawned, and a spawned process imports the main script); to use the workers, put the script's "
                  'body under `if __name__ == "__main__":`', stacklevel=3)


@cache
def _guarded_lines(path: str) -> frozenset[int]:
    """Lines of a script inside the body of a top-level ``if __name__ == "__main__":`` (none if it cannot be read)."""
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    return frozenset(line for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) in MAIN_GUARDS
                     for line in range(node.body[0].lineno, (node.body[-1].end_lineno or node.lineno) + 1))


def _rerun_by_workers() -> bool:
    """Whether a spawned worker, which runs the main module again as it starts (as ``__mp_main__``), would reach
    this call again: the call comes from the top level of a script (``python script.py``, ``python -m module``)
    outside ``if __name__ == "__main__":``. Not so in a notebook, an interactive session, ``python -c`` or a
    package's ``__main__``, which spawn does not run again."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if main is None or path is None or spec == "__main__" or spec.endswith(".__main__"):
        return False
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    return frame is not None and frame.f_lineno not in _guarded_lines(path)


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


def pool(n: int) -> ProcessPoolExecutor:
    """The process's pool of ``n`` single-threaded workers (started on first use, shut down at exit)."""
    if n not in _POOL:
        _POOL[n] = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_single_thread)
        atexit.register(_POOL[n].shutdown)
    return _POOL[n]


def parallel_map(fn: Callable[[T], R], items: list[T], desc: str = "", progress: bool = False) -> list[R]:
    """``fn`` over ``items`` in order on the pool's workers (``fn`` and the items picklable), or in this process
    when one worker is configured or there is one item; ``progress`` shows a bar named ``desc``."""
    n = workers()
    done: Iterable[R]
    if n == 1 or len(items) < 2:
        done = (fn(i) for i in items)
    else:
        done = pool(n).map(fn, items, chunksize=-(-len(items) // (4 * n)))
    return list(tqdm(done, total=len(items), desc=desc, disable=not progress))


def _run_share(job: SweepJob, ck: Checkpoint, share: frozenset[Unit]) -> list[dict]:
    return job.run(ck, share)


def run_pool(job: SweepJob, cks: list[Checkpoint], n: int, progress: bool = True) -> list[dict]:
    """Run a sweep's checkpoints (or shares of their conditions) on ``n`` worker processes; one status row per
    (checkpoint, condition), in the order of the serial path."""
    split = {ck: job.split(ck) for ck in cks}
    todo = {ck: [unit for *_, unit in split[ck][1]] for ck in cks if split[ck][1]}
    got: dict[Unit, dict] = {}
    if todo:
        shares = -(-2 * n // len(todo))
        ex = pool(n)
        futures = [ex.submit(_run_share, job, ck, frozenset(units[s::shares])) for ck, units in todo.items()
                   for s in range(min(shares, len(units)))]
        bar = tqdm(total=len(futures), desc=f"{job.suite.name} checkpoints on {n} workers", disable=not progress)
        for fut in as_completed(futures):
            got.update({Unit(**{k: r[k] for k in KEY_COLUMNS}): r for r in fut.result()})
            bar.update()
        bar.close()
    return [r for ck in cks for r in split[ck][0] + [got[u] for u in todo.get(ck, [])]]
