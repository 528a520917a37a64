"""A results store's size and the time to load a finished study's tables from it, two ways.

    python benchmarks/store_load.py [ROOT]      # default: $LEXPROBE_HOME/results

Printed: files and bytes under ROOT (the stage cache ``_stages`` counted apart); then

* **the finished study** (what ``make run``, ``lexprobe report`` and every notebook do on a second run): a fresh
  process's ``Study()`` on ROOT (the organism; LEXPROBE_SMOKE=1: the smoke organism) reading all five stages'
  tables from the stage cache, every cache key checked against the units' sidecars (target: at most 5 s), run in
  a subprocess so that no import or file is warm, with the engine's libraries it imported (torch, nnsight,
  transformers: none, when every stage and derived stimulus set comes from the cache); and
* **every raw table**: per stimulus set and measurement the rows the stages were computed from (distances of every
  condition, heads and embeddings of the intact model; all checkpoints and seeds, through ``ResultsStore.load``,
  every file's sha256 checked) and the seconds it took. This is what recomputing every stage's statistics would
  have to read first. It uses only ``ResultsStore.load``, so the same script times an old-layout store under the
  code of before.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lexprobe.base.paths import results_dir
from lexprobe.store.results import ResultsStore

READ = {"distances": None, "heads": "intact", "embeddings": "intact"}  # measurement: condition (None: all)
FINISHED = """
import sys
import time
t0 = time.perf_counter()
from lexprobe import Study
t1 = time.perf_counter()
study = Study(root={root!r}, progress=False)
for stage in ("inflection", "heads", "perturbation", "causal", "seeds"):
    getattr(study, stage)
t2 = time.perf_counter()
engine = ",".join(m for m in ("torch", "nnsight", "transformers", "scipy.stats") if m in sys.modules) or "none"
parts = " ".join(f"{{k}}={{v['cached']}}" for k, v in study.timings.items())
print(f"{{t1 - t0:.2f}} {{t2 - t1:.2f}} {{engine}} {{parts}}")
"""


def finished_study(root: Path) -> None:
    """Time a fresh process opening the finished study on ``root`` (all five stages from the stage cache)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", FINISHED.format(root=str(root))], capture_output=True, text=True,
                         check=True).stdout.split()
    wall = time.perf_counter() - t0
    cached = [kv for kv in out[3:] if not kv.startswith("suite=")]
    print(f"finished study, five stages from the stage cache in a fresh process: {wall:.2f} s in all "
          f"(import {out[0]} s, stages {out[1]} s; engine libraries imported: {out[2]}; {' '.join(cached)}) "
          f"(target <= 5 s)", flush=True)
    if not all(kv.endswith("=True") for kv in cached):
        print("  (some stage was not in the stage cache and was computed: run the study once first)")


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else results_dir()
    files = [f for f in root.rglob("*") if f.is_file()]
    cache = [f for f in files if "_stages" in f.relative_to(root).parts]
    print(f"{root}: {len(files):,} files, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB "
          f"(stage cache: {len(cache)} files, {sum(f.stat().st_size for f in cache) / 1e6:.0f} MB)")
    finished_study(root)
    store, total = ResultsStore(root), 0.0
    for suite in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "_stages"):
        for stimuli in sorted(p.name for p in suite.iterdir() if p.is_dir()):
            for m, condition in READ.items():
                t0 = time.perf_counter()
                try:
                    df = store.load(m, suite=suite.name, stimuli=stimuli, condition=condition)
                except FileNotFoundError:
                    continue
                seconds = time.perf_counter() - t0
                total += seconds
                print(f"  {stimuli:40s} {m:10s} {len(df):>11,d} rows, {df['condition'].nunique():5d} conditions: "
                      f"{seconds:6.2f} s", flush=True)
    print(f"loading every raw table: {total:.2f} s")


if __name__ == "__main__":
    main()
