"""Sweeps on Dask and on the process pool: 2 workers give the serial sweep's tables (on Dask also when a worker
dies mid-unit)."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

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
