"""A results store's size and the time to load every table a finished study reads from it.

    python benchmarks/store_load.py [ROOT]      # default: $LEXPROBE_HOME/results

Printed: files and bytes under ROOT (the stage cache ``_stages`` counted apart), then per stimulus set and
measurement the rows a study's stages read (distances of every condition, heads and embeddings of the intact
model; all checkpoints and seeds, through ``ResultsStore.load``, every file's sha256 checked) and the seconds it
took, and the total (target: at most 5 s on the default organism). It uses only ``ResultsStore.load``, so the same
script times an old-layout store under the code of before.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lexprobe.paths import results_dir
from lexprobe.store import ResultsStore

READ = {"distances": None, "heads": "intact", "embeddings": "intact"}  # measurement: condition (None: all)


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else results_dir()
    files = [f for f in root.rglob("*") if f.is_file()]
    cache = [f for f in files if "_stages" in f.relative_to(root).parts]
    print(f"{root}: {len(files):,} files, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB "
          f"(stage cache: {len(cache)} files, {sum(f.stat().st_size for f in cache) / 1e6:.0f} MB)")
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
    print(f"loading every table: {total:.2f} s (target <= 5 s)")


if __name__ == "__main__":
    main()
