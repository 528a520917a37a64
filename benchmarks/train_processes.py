"""Organism training wall time: one process per core (the old default) against every seed at once (the default),
side by side in one run.

Both train the same shortened copy of a profile (``--steps`` steps, its seeds, a checkpoint at the end only) into
fresh folders; the two modes alternate ``--repeats`` times. Printed per mode: median wall time and busy cores (CPU
time of the training processes / wall); then the ratio. With 5 seeds on 2 cores, one process per core trains in 3
rounds and the fifth seed trains alone; every seed at once time-slices the cores and should take about 2.5 seed-times
(ratio about 1.2 if the processes' start and the time-slicing cost little).

    python benchmarks/train_processes.py --steps 60
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def train_once(profile: str, steps: int, workers: int | None) -> dict[str, float]:
    """Train the shortened profile once in a fresh LEXPROBE_HOME with ``workers`` processes (None: the default)."""
    from lexprobe.organism.suite import ensure_trained, get_profile

    p = get_profile(profile)
    p = replace(p, name=f"{p.name}-bench", total_steps=steps, checkpoint_every=steps, warmup=min(p.warmup, steps))
    with tempfile.TemporaryDirectory() as home:
        os.environ["LEXPROBE_HOME"] = home
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        ensure_trained(p, progress=False, workers=workers)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert len(list(Path(home).rglob("timings.json"))) == 1
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cores": cpu / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    modes = {f"{cores} processes (one per core)": cores, "every seed at once (default)": None}
    got: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode, workers in modes.items():
            got[mode].append(train_once(args.profile, args.steps, workers))
    for mode, runs in got.items():
        print(f"{mode:32s} wall {statistics.median(r['wall'] for r in runs):7.1f} s   busy cores "
              f"{statistics.median(r['cores'] for r in runs):.2f}")
    old, new = (statistics.median(r["wall"] for r in runs) for runs in got.values())
    print(f"speed-up (one per core / every seed at once): {old / new:.2f}x  ({cores} cores, profile {args.profile}, "
          f"{args.steps} steps per seed)")


if __name__ == "__main__":
    main()
