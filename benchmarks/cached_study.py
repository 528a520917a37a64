"""What a finished study costs to open again: `make run` and each notebook, with the stage cache and without it.

    python benchmarks/cached_study.py            # the default organism (trained and measured first if needed)
    python benchmarks/cached_study.py --cached-only   # only the cached column (each recomputed run costs minutes)
    LEXPROBE_SMOKE=1 python benchmarks/cached_study.py

Every measurement (the results store's units) is stored before anything is timed, so "stages recomputed" is what
a finished study cost before stage results were cached (statistics, bootstraps, permutation nulls, the report) and
"stages cached" is what it costs now. A notebook's first open also keeps what its widgets open on (notebook 02's
attention map, ``lexprobe.live``) and the offline chart bundle: "first open" is that run, "stages cached" the
reopen after it. The stage cache (``$LEXPROBE_HOME/results/_stages``) is moved aside for each
recomputed run and put back afterwards; both are timed side by side in this one run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from lexprobe.base.paths import REPO_ROOT, results_dir, smoke

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TARGETS = {"make run": 20.0, "notebook": 10.0}


def make_run() -> float:
    t0 = time.perf_counter()
    subprocess.run(["make", "-s", "run"], cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def notebook(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    # startup_timeout: on 2026-12-07 a kernel here sometimes started and never answered the client (kernel idle, client
    # waiting): fail after a minute instead of waiting for the cell timeout
    client = NotebookClient(nb, kernel_name="python3", timeout=3600, startup_timeout=60,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return time.perf_counter() - t0


def without_stage_cache(run: Callable[[], float]) -> float:
    """Time ``run()`` with the stage cache moved aside (so every stage is recomputed), then restore it."""
    cache, aside = results_dir() / "_stages", results_dir() / "_stages.aside"
    if cache.exists():
        cache.rename(aside)
    try:
        return run()
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if aside.exists():
            aside.rename(cache)


def main() -> None:
    cached_only = "--cached-only" in sys.argv[1:]
    print(f"suite: organism{' (smoke)' if smoke() else ''}; results in {results_dir()}; {os.cpu_count()} cores",
          flush=True)
    t = make_run()  # trains / measures / computes whatever is missing, and fills the stage cache
    print(f"first make run (whatever was missing): {t:.1f} s", flush=True)
    nan = float("nan")
    rows = [("make run", nan if cached_only else without_stage_cache(make_run), nan, make_run())]
    for path in NOTEBOOKS:
        slow = nan if cached_only else without_stage_cache(lambda p=path: notebook(p))
        rows.append((path.stem, slow, notebook(path), notebook(path)))
    print(f"\n{'':24s} {'stages recomputed':>18s} {'first open':>11s} {'stages cached':>14s} {'ratio':>7s}  "
          "target (cached)")
    ok = True
    for name, slow, first, fast in rows:
        target = TARGETS["make run" if name == "make run" else "notebook"]
        ok &= fast <= target
        print(f"{name:24s} {slow:16.1f} s {first:9.1f} s {fast:12.1f} s {slow / fast:6.1f}x  <= {target:.0f} s: "
              f"{'met' if fast <= target else 'NOT MET'}")
    print(f"\nall cached targets met: {'yes' if ok else 'NO'}")
    sys.exit(0)


if __name__ == "__main__":
    main()
