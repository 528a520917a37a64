"""Sweep wall time with and without overlapped loading, and peak memory against one model, side by side.

Five random checkpoints in pythia-70m's exact shape (vocabulary 50304) are saved to disk in float16, as on the
hub, as a local ``stepN/`` suite. Each mode sweeps all five (RAW-C-sized stimuli, intact condition, a fresh results
folder) in its own fresh process, so that process's peak resident memory (``ru_maxrss``) belongs to that sweep
alone; modes alternate ``--repeats`` times. Printed: the median wall time of each mode and their ratio, and each
mode's peak memory above the process's baseline (after imports and stimuli, before the first load) in units of
one loaded model's float32 weights (target: at most 2.5).

    python benchmarks/sweep_overlap.py [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_CHECKPOINTS = 5


def build(folder: Path) -> int:
    """Save the suite (float16, plus the tokenizer); return one model's float32 bytes."""
    from lexprobe.checkpoints.shapes import pythia_config, random_model, rawc_sized, word_tokenizer
    from lexprobe.stimuli.tables import load_stimuli

    tok = word_tokenizer(rawc_sized(load_stimuli("lexprobe_nouns")))
    for k in range(N_CHECKPOINTS):
        model = random_model(pythia_config("70m"), seed=k)
        model.half().save_pretrained(folder / f"step{1000 * k}")
        tok.save_pretrained(folder / f"step{1000 * k}")
    return sum(p.numel() for p in random_model(pythia_config("70m")).parameters()) * 4


def child(folder: Path, overlap: bool, threads: int) -> dict:
    """One sweep in this process: wall time and memory."""
    import torch

    from lexprobe.checkpoints.shapes import rawc_sized
    from lexprobe.checkpoints.suites import local_folder
    from lexprobe.engine.extract import ExtractConfig
    from lexprobe.stimuli.tables import load_stimuli
    from lexprobe.sweep.run import SweepJob, run_serial

    torch.set_num_threads(threads)
    stimuli = rawc_sized(load_stimuli("lexprobe_nouns"))
    suite = local_folder(folder)
    with tempfile.TemporaryDirectory() as out:
        job = SweepJob(suite, stimuli, out, ExtractConfig(save_embeddings=False))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        rows = run_serial(job, suite.checkpoints(), progress=False, overlap=overlap)
        wall = time.perf_counter() - t0
    assert [r["status"] for r in rows] == ["measured"] * N_CHECKPOINTS, rows
    return {"wall": wall, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "base": base,
            "load": sum(r["load_seconds"] for r in rows), "measure": sum(r["measure_seconds"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the engine (default 2)")
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "OVERLAP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1] == "1", args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_bytes = build(Path(tmp))
        print(f"{N_CHECKPOINTS} pythia-70m-shaped checkpoints on disk (float16); one loaded model (float32) = "
              f"{model_bytes / 1e6:.0f} MB; torch threads {args.threads}")
        runs: dict[str, list[dict]] = {"serial": [], "overlap": []}
        for _ in range(args.repeats):
            for mode in runs:
                out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child", tmp,
                                      "1" if mode == "overlap" else "0"], capture_output=True, text=True, check=True)
                runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for mode, rs in runs.items():
        wall = statistics.median(r["wall"] for r in rs)
        extra = max(r["peak"] - r["base"] for r in rs) / model_bytes
        walls = ", ".join(f"{r['wall']:.2f}" for r in rs)
        print(f"{mode:8s}: wall {wall:6.2f} s (runs {walls}); loads "
              f"{statistics.median(r['load'] for r in rs):.2f} s, measuring "
              f"{statistics.median(r['measure'] for r in rs):.2f} s in all; peak memory above baseline "
              f"{extra:.2f} x one model (peak {max(r['peak'] for r in rs) / 1e6:.0f} MB)")
    ratio = statistics.median(r["wall"] for r in runs["serial"]) / statistics.median(r["wall"] for r in runs["overlap"])
    peak = max(r["peak"] - r["base"] for r in runs["overlap"]) / model_bytes
    print(f"overlap speed-up: {ratio:.2f}x; overlapped peak above baseline: {peak:.2f} x one model "
          f"(target <= 2.5: {'met' if peak <= 2.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
