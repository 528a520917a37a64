"""Which stage's statistics hold the memory: a finished study's stages recomputed from its stored units.

    python benchmarks/stage_memory.py          # the default organism, after `make run` (a finished study)
    LEXPROBE_SMOKE=1 python benchmarks/stage_memory.py

``Study(cache=False)`` recomputes every stage from the results store (every unit is stored by a finished study, so
nothing is measured again); after each stage the process's peak resident memory so far and the stage's seconds are
printed. The first stage whose peak jumps is the one that holds the memory.
"""

from __future__ import annotations

import resource
import time

from lexprobe import Study

STAGES = ("inflection", "discovery", "perturbation", "causal", "replication")


def main() -> None:
    study = Study(progress=False, cache=False)
    for name in STAGES:
        started = time.perf_counter()
        study.outcome(name)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        print(f"{name:13s} {time.perf_counter() - started:6.1f} s   peak so far {peak:5.2f} GB", flush=True)


if __name__ == "__main__":
    main()
