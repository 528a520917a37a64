"""Overlapped loading: read item k+1 in a background thread while the caller works on item k.

Used by sweeps so that reading and validating the next checkpoint (download or disk) hides behind the engine
measuring the current one. At most two loaded values exist at once: the one handed out and the one loading. The
caller must be finished with a value when it asks for the next one, which is released at that point.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
V = TypeVar("V")


@dataclass
class Fetched(Generic[T, V]):
    """One item's load result: the value, or the exception loading raised; and the load's wall time."""

    item: T
    value: V | None
    error: Exception | None
    seconds: float


def _load_timed(load: Callable[[T], V], item: T) -> Fetched[T, V]:
    t0 = time.perf_counter()
    try:
        return Fetched(item, load(item), None, time.perf_counter() - t0)
    except Exception as err:  # noqa: BLE001 - handed to the caller, who decides what is fatal
        return Fetched(item, None, err, time.perf_counter() - t0)


def prefetched(items: Sequence[T], load: Callable[[T], V], release: Callable[[V], None],
               overlap: bool = True) -> Iterator[Fetched[T, V]]:
    """Yield every item's :class:`Fetched` in order, loading the next item while the caller holds the current one
    (``overlap=False`` loads strictly one after the other). ``release(value)`` frees a value once the caller asks
    for the next; a value left unreleased by an early exit is released too."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lexprobe-prefetch")
    pending: Future[Fetched[T, V]] | None = pool.submit(_load_timed, load, items[0]) if items else None
    try:
        for i in range(len(items)):
            assert pending is not None  # item i's load was submitted (while or after item i - 1 was handed out)
            fetched = pending.result()
            nxt = items[i + 1] if i + 1 < len(items) else None
            pending = pool.submit(_load_timed, load, nxt) if overlap and nxt is not None else None
            try:
                yield fetched
            finally:
                if fetched.value is not None:
                    release(fetched.value)
                    fetched.value = None
            if not overlap and nxt is not None:
                pending = pool.submit(_load_timed, load, nxt)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if pending is not None and pending.done() and not pending.cancelled():
            late = pending.result()
            if late.value is not None:
                release(late.value)
