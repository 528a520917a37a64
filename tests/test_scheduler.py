"""Sweeps on Dask and on the process pool: 2 workers give the serial sweep's tables (on Dask also when a worker
dies mid-unit)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_model
from distributed import Client, LocalCluster

from lexprobe import Study
from lexprobe.checkpoints.suites import Checkpoint, Loaded
from lexprobe.organism.suite import ensure_trained
from lexprobe.store.results import ResultsStore
from lexprobe.sweep.run import SweepJob, extract
from lexprobe.sweep.scheduler import parse_scheduler, run_dask

STEPS = (0, 16, 48)
HELD = (0, 16)  # (seed, step) of the unit whose worker the kill test shoots


@pytest.fixture(scope="module")
def organism():
    return ensure_trained("smoke", progress=False)


@pytest.fixture(scope="module")
def few(stimuli):
    return stimuli.subset(sorted(stimuli.pairs["word"].unique())[:3], name="few")


@pytest.fixture(scope="module")
def serial(organism, few, tmp_path_factory):
    root = tmp_path_factory.mktemp("serial")
    status = extract(organism, few, STEPS, root=root, progress=False, scheduler="serial")
    assert set(status["status"]) == {"measured"} and len(status) == len(organism.seeds) * len(STEPS)
    return root


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def assert_same_tables(a: Path, b: Path) -> None:
    for m in ("distances", "heads", "embeddings"):
        x, y = ResultsStore(a).load(m), ResultsStore(b).load(m)
        if m == "embeddings":
            np.testing.assert_array_equal(np.stack(x["embedding"]), np.stack(y["embedding"]))
            x, y = x.drop(columns="embedding"), y.drop(columns="embedding")
        pd.testing.assert_frame_equal(x, y)


def test_parallel_map_keeps_the_order_on_the_pool(monkeypatch):
    """The pool's map (stage 1's bootstrap refits, stage 4's greedy searches) returns what ``map`` does, in order."""
    from lexprobe.sweep.pool import parallel_map

    monkeypatch.setenv("LEXPROBE_WORKERS", "2")
    items = [np.arange(n, dtype=float) for n in range(1, 40)]
    got = parallel_map(np.cumsum, items)
    assert len(got) == len(items)
    for a, b in zip(got, map(np.cumsum, items)):
        np.testing.assert_array_equal(a, b)
    assert parallel_map(str, []) == [] and parallel_map(str, [5]) == ["5"]  # one item or none: in this process


def test_pool_sweep_matches_serial_and_shares_a_checkpoints_conditions(organism, few, serial, tmp_path,
                                                                          monkeypatch):
    from lexprobe.engine.extract import INTACT
    from lexprobe.engine.interventions import HeadAblation

    conds = [INTACT, HeadAblation(((0, 0),), "zero"), HeadAblation(((1, 1),), "zero")]
    monkeypatch.setenv("LEXPROBE_WORKERS", "2")
    status = extract(organism, few, STEPS, root=tmp_path / "pool", progress=False)
    assert list(status["status"]) == ["measured"] * len(organism.seeds) * len(STEPS)
    assert_same_tables(serial, tmp_path / "pool")
    one = organism.with_(seeds=organism.seeds[:1])
    shared = extract(one, few, STEPS[-1:], root=tmp_path / "shared", conditions=conds, progress=False)
    alone = extract(one, few, STEPS[-1:], root=tmp_path / "alone", conditions=conds, progress=False,
                    scheduler="serial")
    assert list(shared["condition"]) == list(alone["condition"])  # 3 conditions, measured in 2 shares
    assert_same_tables(tmp_path / "alone", tmp_path / "shared")
    folder = next((tmp_path / "shared").rglob(f"step{STEPS[-1]}"))
    assert len(list(folder.iterdir())) == 4  # manifest + one part per measurement, however many shares wrote


UNGUARDED = """
import sys
from lexprobe import Study
from lexprobe.stimuli.tables import load_stimuli

stimuli = load_stimuli()
few = stimuli.subset(sorted(stimuli.pairs["word"].unique())[:3], name="few")
s1 = Study("local:" + sys.argv[1], few, root=sys.argv[2], n_boot=10, progress=False).inflection
s1.best.to_pickle(sys.argv[3])
s1.inflection.to_pickle(sys.argv[4])
"""


def test_a_script_without_a_main_guard_runs_its_sweeps_in_its_own_process(few, tokenizer, tmp_path, monkeypatch):
    """A plain script computing stage 1 with 2 workers configured, without ``if __name__ == "__main__":``: a spawned
    worker would run the script again, so its sweeps (the measurement and the bootstrap refits) run in its own
    process, with one warning naming the fix, and give the numbers of a serial run."""
    run = tmp_path / "run"
    for step in (0, 1, 2, 4, 8):
        tiny_model(len(tokenizer), seed=step).save_pretrained(run / f"step{step}")
        tokenizer.save_pretrained(run / f"step{step}")
    script = tmp_path / "plain.py"
    script.write_text(UNGUARDED)
    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path / "home"))
    env = {**os.environ, "LEXPROBE_WORKERS": "2"}
    got = [tmp_path / "best.pkl", tmp_path / "inflection.pkl"]
    done = subprocess.run([sys.executable, str(script), str(run), str(tmp_path / "script"), *map(str, got)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stderr.count('put the script\'s body under `if __name__ == "__main__":`') == 1, done.stderr[-4000:]
    want = Study(f"local:{run}", few, root=str(tmp_path / "serial"), n_boot=10, progress=False).inflection
    pd.testing.assert_frame_equal(pd.read_pickle(got[0]), want.best)
    pd.testing.assert_frame_equal(pd.read_pickle(got[1]), want.inflection)


def test_parse_scheduler():
    assert parse_scheduler("dask") is None
    assert parse_scheduler("dask:tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    with pytest.raises(ValueError, match="--scheduler 'spark'"):
        parse_scheduler("spark")


def test_bad_scheduler_fails_even_when_everything_is_cached(organism, few, serial):
    with pytest.raises(ValueError, match="--scheduler 'dusk'"):
        extract(organism, few, STEPS, root=serial, scheduler="dusk", progress=False)


def test_dask_sweep_matches_serial_and_rerun_skips(organism, few, serial, client, tmp_path):
    status = extract(organism, few, STEPS, root=tmp_path, progress=False, scheduler=f"dask:{client.scheduler.address}")
    assert list(status["status"]) == ["measured"] * len(status)
    assert (status["load_seconds"] > 0).all() and (status["measure_seconds"] > 0).all()
    assert_same_tables(serial, tmp_path)
    side = ResultsStore(tmp_path).units("heads")[0][1]
    assert side["load_seconds"] > 0 and side["measure_seconds"] > 0
    again = run_dask(SweepJob(organism, few, str(tmp_path)), organism.checkpoints(STEPS), client=client,
                     progress=False)
    assert [r["status"] for r in again] == ["cached"] * len(status)


@dataclass(frozen=True)
class HeldJob(SweepJob):
    """A sweep whose first attempt at unit HELD waits (holding its worker) until the test kills that worker."""

    gate: str = ""

    def load(self, ck: Checkpoint) -> Loaded:
        if (ck.seed, ck.step) == HELD:
            try:
                with open(Path(self.gate) / "held", "x") as f:  # only the first attempt gets here
                    f.write(str(os.getpid()))
            except FileExistsError:
                return super().load(ck)
            time.sleep(120)
            raise RuntimeError("the test should have killed this worker")
        return super().load(ck)


def test_worker_killed_mid_unit_still_gives_identical_tables(organism, few, serial, client, tmp_path):
    job = HeldJob(organism, few, str(tmp_path / "res"), gate=str(tmp_path))
    out: dict = {}

    def sweep() -> None:
        try:
            out["rows"] = run_dask(job, organism.checkpoints(STEPS), client=client, progress=False)
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            out["error"] = err

    thread = threading.Thread(target=sweep)
    thread.start()
    held = tmp_path / "held"
    deadline = time.monotonic() + 60
    while not (held.is_file() and held.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(held.read_text())
    assert pid != os.getpid()  # a worker process holds the unit, not this one
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive() and "error" not in out, out.get("error")
    assert [r["status"] for r in out["rows"]] == ["measured"] * len(out["rows"])
    assert_same_tables(serial, tmp_path / "res")


def test_plan_counts_units_downloads_and_stored_results(organism, few, serial, monkeypatch, tmp_path):
    from lexprobe.checkpoints.named import resolve_suite
    from lexprobe.checkpoints.shapes import checkpoint_bytes
    from lexprobe.plan import plan

    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path))  # a fresh calibration cache
    text = plan(organism, few, STEPS, root=serial)
    n = len(organism.seeds) * len(STEPS)
    assert f"= {n} units, {n} already stored, 0 to run" in text  # the serial sweep stored them all
    assert "(checkpoints are local)" in text
    assert (tmp_path / "calibration.json").is_file()
    text = plan(organism, few, (0, 1, 2, 4, 8, 16, 48), root=serial)
    assert f"already stored, {len(organism.seeds) * 4} to run" in text
    # a hub suite downloads the exact float16 shape per checkpoint (nothing is fetched to find out)
    hub = resolve_suite("pythia-14m:seeds=0-2")
    text = plan(hub, few, (0, 1000), root=tmp_path / "none")
    per = checkpoint_bytes("14m")
    assert "3 seeds x 2 steps = 6 units, 0 already stored, 6 to run" in text
    assert f"download: {per / 1e6:.1f} MB per checkpoint (float16), {6 * per / 1e6:.1f} MB in all" in text
