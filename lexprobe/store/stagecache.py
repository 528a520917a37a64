"""Finished stage results kept in the results store, so a finished study only reads tables.

A stage result (a dataclass of DataFrames, nested dataclasses of DataFrames, stimulus sets and plain values) is
written as one Parquet file per table plus a ``manifest.json`` under
``ROOT/_stages/<suite>/<stimuli>/<stage>/<key>/``. The key is a fingerprint of the stage's settings, of the stored
units it read (their fingerprints and content hashes) and of the source of the code that computes it, so a changed
setting, a re-measured unit or changed statistics code finds no entry and the stage is recomputed; nothing is
ever overwritten in place. Tables are written atomically and the manifest last (with every file's sha256): an
interrupted write leaves no entry, and a changed file is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from lexprobe.base.code import code_fingerprint
from lexprobe.base.files import atomic_write, fingerprint
from lexprobe.stimuli.tables import Stimuli
from lexprobe.store.results import ResultsStore, StoreConflict, Unit

T = TypeVar("T")
def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _mixed(values: pd.Series) -> bool:
    """An object column that Parquet cannot hold as one type: tuples (head sets), or values of several types (a
    seed column whose pooled row says 'all')."""
    kinds = {type(v) for v in values if not (v is None or (isinstance(v, float) and v != v))}
    return len(kinds) > 1 or any(issubclass(k, (tuple, list)) for k in kinds)


def _frame_bytes(df: pd.DataFrame) -> tuple[bytes, list[str]]:
    """Parquet bytes of a table; object columns Parquet cannot hold as one type (:func:`_mixed`) go as JSON text
    and are named, to be read back value for value."""
    nested = [c for c in df.columns if df[c].dtype == object and _mixed(df[c])]
    out = df.assign(**{c: df[c].map(json.dumps) for c in nested}) if nested else df
    buf = io.BytesIO()
    out.to_parquet(buf, index=False)
    return buf.getvalue(), nested


def _frame(data: bytes, nested: list[str]) -> pd.DataFrame:
    df = pd.read_parquet(io.BytesIO(data))
    if df.shape[1] == 0:  # a table with no columns (a stage that made none) reads back as it was made
        return pd.DataFrame(index=range(len(df)))
    for c in nested:
        df[c] = df[c].map(lambda v: _tuples(json.loads(v)))
    return df


class StageCache:
    """Stage results under ``ROOT/_stages``; ``given`` fields (suite, stimuli, ...) are supplied on load."""

    def __init__(self, root: str | Path):
        self.root = Path(root) / "_stages"

    def dir(self, suite: str, stimuli: str, stage: str, key: str) -> Path:
        return self.root / suite / stimuli / stage / key

    def get(self, cls: type[T], where: tuple[str, str, str, str], given: dict[str, Any]) -> T | None:
        """The stored result of ``cls`` at ``where`` = (suite, stimuli, stage, key), or None."""
        d = self.dir(*where)
        man = d / "manifest.json"
        if not man.is_file():
            return None
        manifest = json.loads(man.read_text())
        files: dict[str, bytes] = {}
        for name, sha in manifest["sha256"].items():
            data = (d / name).read_bytes()
            if hashlib.sha256(data).hexdigest() != sha:
                raise StoreConflict(f"{d / name}: content does not match its manifest (file changed or corrupt); "
                                    f"delete {d} to recompute the stage")
            files[name] = data
        return _restore(cls, manifest["fields"], files, manifest["nested"], given, "")

    def put(self, obj: Any, where: tuple[str, str, str, str], given: tuple[str, ...], inputs: dict) -> None:
        """Store a stage result (fields named in ``given`` are not stored); ``inputs`` is recorded as is."""
        d = self.dir(*where)
        d.mkdir(parents=True, exist_ok=True)
        files: dict[str, bytes] = {}
        nested: dict[str, list[str]] = {}
        fields = _flatten(obj, "", set(given), files, nested)
        for name, data in files.items():
            atomic_write(d / name, data)
        manifest = {"stage": where[2], "key": where[3], "fields": fields, "nested": nested, "inputs": inputs,
                    "sha256": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}}
        atomic_write(d / "manifest.json", json.dumps(manifest, indent=1, default=str).encode())


def _flatten(obj: Any, prefix: str, given: set[str], files: dict[str, bytes],
             nested: dict[str, list[str]]) -> dict[str, Any]:
    """Field -> how it is stored: a table file, a nested dataclass, stimulus sets, a JSON value or 'given'."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v, name = getattr(obj, f.name), prefix + f.name
        if f.name in given:
            out[f.name] = {"given": True}
        elif isinstance(v, pd.DataFrame):
            files[f"{name}.parquet"], nested[f"{name}.parquet"] = _frame_bytes(v)
            out[f.name] = {"table": f"{name}.parquet"}
        elif dataclasses.is_dataclass(v):
            out[f.name] = {"dataclass": _flatten(v, f"{name}.", set(), files, nested)}
        elif isinstance(v, dict) and v and all(isinstance(s, Stimuli) for s in v.values()):
            sets = {}
            for k, s in v.items():
                for part in ("pairs", "sentences"):
                    files[f"{name}.{k}.{part}.parquet"], nested[f"{name}.{k}.{part}.parquet"] = \
                        _frame_bytes(getattr(s, part))
                sets[k] = {"name": s.name, "hash": s.hash}
            out[f.name] = {"stimuli": sets}
        else:
            json.dumps(v)  # a value that JSON cannot hold fails here, not on load
            out[f.name] = {"value": v}
    return out


def _restore(cls: type[T], fields: dict[str, Any], files: dict[str, bytes], nested: dict[str, list[str]],
             given: dict[str, Any], prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    kw: dict[str, Any] = {}
    for name, how in fields.items():
        if "given" in how:
            kw[name] = given[name]
        elif "table" in how:
            kw[name] = _frame(files[how["table"]], nested[how["table"]])
        elif "dataclass" in how:
            sub = next(t for t in typing.get_args(hints[name]) or (hints[name],) if dataclasses.is_dataclass(t))
            # a type hint names dataclass classes, never instances (is_dataclass accepts both)
            kw[name] = _restore(typing.cast(type, sub), how["dataclass"], files, nested, {}, f"{prefix}{name}.")
        elif "stimuli" in how:
            kw[name] = {k: Stimuli(name=s["name"], hash=s["hash"],
                                   **{part: _frame(files[f"{prefix}{name}.{k}.{part}.parquet"],
                                                   nested[f"{prefix}{name}.{k}.{part}.parquet"])
                                      for part in ("pairs", "sentences")})
                        for k, s in how["stimuli"].items()}
        else:
            kw[name] = how["value"]
    return cls(**kw)


def key_of(module: str, **fields: Any) -> str:
    """A stage's cache key: fingerprint of its settings and inputs and of the code of ``module`` (the stage's own,
    with everything it imports)."""
    return fingerprint({**fields, "code": code_fingerprint(module)})


def units_fingerprint(store: ResultsStore, measurement: str, suite: str, stimuli: str, conditions: list[str],
                      models: list[str], seeds: list[int], steps: list[int]) -> str | None:
    """Fingerprint of the stored units a stage reads (each sidecar's fingerprint and content hash), or None when
    one of them is not stored yet. Each checkpoint folder's manifest is looked up once for all conditions."""
    folders = {(model, seed, step): store.manifest(store.dir(Unit(suite, stimuli, "", model, int(seed), int(step))))
               ["conditions"] for model in models for seed in seeds for step in steps}
    h = hashlib.sha256()
    for cond in conditions:
        for model in models:
            for seed in seeds:
                for step in steps:
                    rec = folders[model, seed, step].get(cond)
                    if rec is None or measurement not in rec["tables"]:
                        return None
                    fp, sha = rec["meta"]["fingerprint"], rec["tables"][measurement]["sha256"]
                    h.update(f"{cond}/{model}/{seed}/{step}:{fp}:{sha};".encode())
    return h.hexdigest()[:16]
