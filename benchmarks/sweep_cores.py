"""Sweep wall time and busy cores: today's serial path (one process, all torch threads, overlapped loading) against
the default pool of single-threaded worker processes, side by side.

Both sweep the same organism checkpoints (``--steps`` log-spaced ones of the first ``--seeds`` seeds) under the
intact model and ``--conditions`` single-head zero ablations, on the shipped stimuli, into a fresh results folder;
each run is a fresh process (the pool's start and the workers' imports are counted), the modes alternate
``--repeats`` times. Printed per mode: median wall time, CPU time of the process and all its workers, mean busy
cores (CPU / wall); then the speed-up (serial wall / pool wall).

    python benchmarks/sweep_cores.py --profile smoke
    python benchmarks/sweep_cores.py --profile default --steps 6 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def child(profile: str, n_steps: int, n_seeds: int, n_conditions: int, scheduler: str) -> dict:
    """One sweep in this process: its wall time and how many (checkpoint, condition) units it measured."""
    from lexprobe.checkpoints.suites import log_subset
    from lexprobe.engine.extract import INTACT
    from lexprobe.engine.interventions import HeadAblation
    from lexprobe.organism.suite import ensure_trained
    from lexprobe.plan import model_shape
    from lexprobe.stimuli.tables import load_stimuli
    from lexprobe.sweep.run import extract

    suite = ensure_trained(profile, progress=False)
    suite = suite.with_(seeds=suite.seeds[:n_seeds])
    stimuli = load_stimuli("lexprobe_nouns")
    cfg, _ = model_shape(suite, suite.models[0])
    heads = [(layer, head) for layer in range(cfg.num_hidden_layers)
             for head in range(cfg.num_attention_heads)][:n_conditions]
    conds = [INTACT, *(HeadAblation((h,), "zero") for h in heads)]
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        status = extract(suite, stimuli, log_subset(suite.steps, n_steps), root=out, conditions=conds,
                         progress=False, scheduler=scheduler)
        wall = time.perf_counter() - t0
    assert set(status["status"]) == {"measured"}, status
    return {"wall": wall, "units": len(status)}


def run(args: argparse.Namespace, mode: str) -> dict:
    """One sweep in a fresh process; wall time and the CPU seconds of that process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "LEXPROBE_WORKERS": str(args.workers)}
    out = subprocess.run([sys.executable, __file__, "--profile", args.profile, "--steps", str(args.steps),
                          "--seeds", str(args.seeds), "--conditions", str(args.conditions), "--child", mode],
                         capture_output=True, text=True, check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    got["cpu"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke", help="organism profile: smoke | default")
    ap.add_argument("--steps", type=int, default=8, help="log-spaced checkpoints per seed (default 8)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds of the organism swept (default 2)")
    ap.add_argument("--conditions", type=int, default=4, help="single-head ablations beside intact (default 4)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="pool workers (default: cores)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", choices=("serial", "pool"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.profile, args.steps, args.seeds, args.conditions, args.child)))
        return
    runs: dict[str, list[dict]] = {"serial": [], "pool": []}
    for _ in range(args.repeats):
        for mode in runs:
            runs[mode].append(run(args, mode))
    units = runs["pool"][0]["units"]
    print(f"organism {args.profile}: {args.seeds} seeds x {args.steps} steps x {args.conditions + 1} conditions = "
          f"{units} units; {len(os.sched_getaffinity(0))} cores, pool of {args.workers} single-threaded workers")
    for mode, rs in runs.items():
        wall, cpu = statistics.median(r["wall"] for r in rs), statistics.median(r["cpu"] for r in rs)
        walls = ", ".join(f"{r['wall']:.1f}" for r in rs)
        print(f"{mode:6s}: wall {wall:6.1f} s (runs {walls}), CPU {cpu:6.1f} s, busy cores {cpu / wall:.2f}")
    ratio = statistics.median(r["wall"] for r in runs["serial"]) / statistics.median(r["wall"] for r in runs["pool"])
    print(f"pool speed-up over serial: {ratio:.2f}x")


if __name__ == "__main__":
    main()
