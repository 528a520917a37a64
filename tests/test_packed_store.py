"""The packed results store: per-condition column sets, refused fingerprints, orphan parts, old-layout migration."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest

from lexprobe.cli import main
from lexprobe.store.results import OldLayout, ResultsStore, StoreConflict, Unit
from lexprobe.store.stagecache import units_fingerprint


def _tables(seed: int, patch: bool = False) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    dist = pd.DataFrame({"pair_id": np.repeat([0, 1, 2], 2), "layer": np.tile([0, 1], 3), "distance": rng.random(6)})
    if patch:  # a patching condition: one distances table with an extra column, no heads table
        return {"distances": dist.assign(patch=np.arange(6, dtype=np.int64))}
    heads = pd.DataFrame({"sentence_id": [0, 0, 1, 1], "layer": [0, 1, 0, 1], "head": [0, 0, 0, 0],
                          "cue_attn": rng.random(4)})
    return {"distances": dist, "heads": heads}


def _meta(fp: str) -> dict:
    return {"fingerprint": fp, "stimuli": {"name": "stim", "hash": "h"}, "config": {}}


def _unit(cond: str, step: int = 0) -> Unit:
    return Unit("s", "stim", cond, "m", 0, step)


def test_conditions_with_their_own_columns_share_a_checkpoint_folder(tmp_path):
    store = ResultsStore(tmp_path)
    store.write_many([(_unit("intact"), _tables(0), _meta("a")),
                      (_unit("zero-x"), _tables(1), _meta("b"))])
    store.write(_unit("patch-y"), _tables(2, patch=True), _meta("c"))
    store.compact(_unit("intact"))
    files = sorted(f.name.split("-")[0] for f in store.dir(_unit("intact")).iterdir())
    assert files == ["distances", "distances", "heads", "manifest.json"]  # two column sets of distances
    for cond, seed, patch in (("intact", 0, False), ("zero-x", 1, False), ("patch-y", 2, True)):
        for m, want in _tables(seed, patch).items():
            got = store.load(m, condition=cond).drop(columns=["suite", "stimuli", "condition", "model", "seed",
                                                              "step"])
            pd.testing.assert_frame_equal(got, want)
    assert store.sidecar(_unit("patch-y"), "heads") is None
    assert store.is_done(_unit("patch-y"), ("distances",), "c")
    both = store.load("distances")
    assert list(both["condition"].unique()) == ["intact", "patch-y", "zero-x"]  # the old folders' order
    assert both["patch"].isna().sum() == 12
    own = hashlib.sha256(_tables(1)["distances"].to_parquet(index=False)).hexdigest()
    assert store.sidecar(_unit("zero-x"), "distances")["sha256"] == own  # a table's hash survives packing


def test_an_empty_table_is_stored_and_loads_beside_others(tmp_path):
    """A condition may store a table with no rows (a greedy search with nothing to recover has an empty curve):
    it loads as no rows, alone or beside other conditions' rows of the same part."""
    store = ResultsStore(tmp_path)
    empty = {"distances": _tables(0)["distances"].iloc[:0]}
    store.write_many([(_unit("intact"), _tables(0), _meta("a")), (_unit("none-y"), empty, _meta("b"))])
    assert store.is_done(_unit("none-y"), ("distances",), "b")
    assert store.load("distances", condition="none-y").empty
    both = store.load("distances", condition=["intact", "none-y"])
    assert len(both) == 6 and set(both["condition"]) == {"intact"}


def test_other_fingerprint_refused_and_orphan_parts_removed(tmp_path):
    store = ResultsStore(tmp_path)
    store.write(_unit("intact"), _tables(0), _meta("a"))
    with pytest.raises(StoreConflict, match="fingerprint"):
        store.write(_unit("intact"), _tables(1), _meta("z"))
    with pytest.raises(StoreConflict, match="fingerprint"):
        store.is_done(_unit("intact"), ("distances",), "z")
    orphan = store.dir(_unit("intact")) / "distances-000000000000.parquet"  # a writer killed before its manifest
    orphan.write_bytes(b"partial")
    store.write(_unit("other"), _tables(1), _meta("b"))
    assert not orphan.exists()
    pd.testing.assert_frame_equal(store.load("distances", condition="intact").iloc[:, 6:], _tables(0)["distances"])


def _write_old_layout(root, unit: Unit, tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    d = root / unit.suite / unit.stimuli / unit.condition / unit.model / f"seed{unit.seed}" / f"step{unit.step}"
    d.mkdir(parents=True)
    shas = {}
    for m, df in tables.items():
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        (d / f"{m}.parquet").write_bytes(buf.getvalue())
        shas[m] = hashlib.sha256(buf.getvalue()).hexdigest()
        side = {"fingerprint": "f", "commit": "c0", "measurement": m, "rows": len(df), "sha256": shas[m],
                "unit": unit.__dict__}
        (d / f"{m}.json").write_text(json.dumps(side))
    return shas


def test_old_layout_refused_then_migrated_with_stage_keys_kept(tmp_path, capsys):
    root = tmp_path / "results"
    shas = {(c, s): _write_old_layout(root, _unit(c, s), _tables(s + 3 * i))
            for i, c in enumerate(("intact", "zero-x")) for s in (0, 1)}
    skipped = root / "s" / "stim" / "intact" / "m" / "seed0" / "step2"
    skipped.mkdir()
    (skipped / "skipped.json").write_text(json.dumps({"unit": _unit("intact", 2).__dict__, "reason": "gone"}))
    with pytest.raises(OldLayout, match="lexprobe store migrate"):
        ResultsStore(root).load("distances")
    assert main(["store", "migrate", str(root)]) == 0
    assert "packed 4 conditions of 3 checkpoints (1 skipped records)" in capsys.readouterr().out
    store = ResultsStore(root)
    for (c, s), sha in shas.items():
        assert store.sidecar(_unit(c, s), "distances")["sha256"] == sha["distances"]
        got = store.load("heads", condition=c, step=s).iloc[:, 6:]
        pd.testing.assert_frame_equal(got, _tables(s + 3 * ("intact", "zero-x").index(c))["heads"])
    assert list(store.skipped()["reason"]) == ["gone"]
    assert units_fingerprint(store, "distances", "s", "stim", ["intact", "zero-x"], ["m"], [0], [0, 1]) is not None
    assert sorted(p.name for p in (root / "s" / "stim").iterdir()) == ["m"]  # old folders gone


def test_the_stage_cache_reads_back_columns_parquet_cannot_type(tmp_path):
    """A finished stage's tables read back value for value: head sets (tuples), a seed column whose pooled row says
    'all', and a table with no columns at all."""
    from dataclasses import dataclass

    from lexprobe.store.stagecache import StageCache

    @dataclass
    class Result:
        validity: pd.DataFrame
        nothing: pd.DataFrame

    made = Result(pd.DataFrame({"seed": [0, 1, "all"], "heads": [((1, 2),), (), ((0, 0), (2, 1))],
                                "recall": [0.5, float("nan"), 1.0]}), pd.DataFrame())
    cache = StageCache(tmp_path)
    cache.put(made, ("s", "stim", "validation", "k"), (), {})
    got = cache.get(Result, ("s", "stim", "validation", "k"), {})
    assert got is not None and got.validity["seed"].tolist() == [0, 1, "all"]
    pd.testing.assert_frame_equal(got.validity, made.validity)
    pd.testing.assert_frame_equal(got.nothing, made.nothing)
