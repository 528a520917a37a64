"""One checkpoint's packed results: a ``manifest.json`` and a few Parquet part files for all its conditions.

A checkpoint folder (suite, stimuli, model, seed, step) holds, per measurement, part files named
``<measurement>-<sha256[:12]>.parquet``; each part stacks the tables of several conditions that share one column
set (names and dtypes), with a leading, dictionary-encoded ``condition`` column. A condition whose table has
other columns (say a ``patch`` column) lands in a part of its own, and a condition may store only some
measurements. The manifest is the
one commit point: it names each part with its sha256 and, per condition, its sidecar (``meta``) and per
measurement the part, row count, column order and the sha256 of the table serialized on its own (the content hash
a stage cache keys on, which packing and compaction leave unchanged). Writers hold an exclusive ``flock`` on the
folder, write parts atomically, then the manifest, then delete parts nothing references (also those a killed
writer left behind).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lexprobe.base.files import atomic_write

MANIFEST = "manifest.json"
LAYOUT = "packed-1"


class StoreConflict(RuntimeError):
    """A finished unit exists with a different fingerprint (config or stimuli changed), or a file is corrupt."""


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """A table as Parquet bytes (no index)."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Entry:
    """One condition's tables to store, its sidecar fields and (when migrating) the tables' known content hashes."""

    condition: str
    tables: dict[str, pd.DataFrame]
    meta: dict[str, Any]
    shas: dict[str, str] | None = None


def read_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest, or an empty one."""
    path = folder / MANIFEST
    if not path.is_file():
        return {"layout": LAYOUT, "parts": {}, "conditions": {}, "skipped": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StoreConflict(f"{path}: not a valid manifest ({err}); delete {folder} to measure it again") from err


@contextmanager
def locked(folder: Path) -> Iterator[dict[str, Any]]:
    """The folder's manifest under an exclusive lock; changes to it are committed (with garbage collection of
    unreferenced parts) when the block exits without an error."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        manifest = read_manifest(folder)
        yield manifest
        used = {t["part"] for c in manifest["conditions"].values() for t in c["tables"].values()}
        manifest["parts"] = {p: s for p, s in manifest["parts"].items() if p in used}
        atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1, default=str).encode())
        for f in folder.iterdir():
            if f.name.startswith(".tmp-") or (f.suffix == ".parquet" and f.name not in manifest["parts"]):
                f.unlink(missing_ok=True)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _schema(df: pd.DataFrame) -> tuple[tuple[str, str], ...]:
    return tuple((str(c), str(t)) for c, t in df.dtypes.items())


def _write_parts(folder: Path, manifest: dict[str, Any], measurement: str,
                 tables: list[tuple[str, pd.DataFrame]]) -> dict[str, str]:
    """Stack the tables (condition, table) into one part per column set; the part each condition went to."""
    groups: dict[tuple, list[tuple[str, pd.DataFrame]]] = {}
    for cond, df in tables:
        groups.setdefault(_schema(df), []).append((cond, df))
    where = {}
    for group in groups.values():
        stacked = pd.concat([df for _, df in group], ignore_index=True)
        codes = np.repeat(np.arange(len(group)), [len(df) for _, df in group])
        stacked.insert(0, "condition", pd.Categorical.from_codes(codes, [c for c, _ in group]))
        data = parquet_bytes(stacked)
        digest = sha256(data)
        name = f"{measurement}-{digest[:12]}.parquet"
        atomic_write(folder / name, data)
        manifest["parts"][name] = digest
        where.update({cond: name for cond, _ in group})
    return where


def write(folder: Path, entries: list[Entry]) -> None:
    """Store the entries' tables in new parts of ``folder`` (a condition stored before with another fingerprint
    is refused; with the same one, the measurements given replace its old ones)."""
    with locked(folder) as manifest:
        conds = manifest["conditions"]
        for e in entries:
            old = conds.get(e.condition)
            if old is not None and old["meta"]["fingerprint"] != e.meta["fingerprint"]:
                raise StoreConflict(f"{folder}: condition {e.condition!r} is stored with fingerprint "
                                    f"{old['meta']['fingerprint']}, this write has {e.meta['fingerprint']}; "
                                    "delete the folder or use another results root")
        measurements = dict.fromkeys(m for e in entries for m in e.tables)
        for m in measurements:
            given = [(e.condition, e.tables[m]) for e in entries if m in e.tables]
            parts = _write_parts(folder, manifest, m, given)
            for e in entries:
                if m not in e.tables:
                    continue
                df = e.tables[m]
                own = e.shas[m] if e.shas is not None else sha256(parquet_bytes(df))
                rec = conds.setdefault(e.condition, {"meta": e.meta, "tables": {}})
                rec["meta"] = e.meta
                rec["tables"][m] = {"part": parts[e.condition], "rows": len(df), "sha256": own,
                                    "columns": [str(c) for c in df.columns]}
        for e in entries:
            manifest["skipped"].pop(e.condition, None)


def write_skipped(folder: Path, conditions: list[str], record: dict[str, Any]) -> None:
    """Record that the checkpoint could not be measured for these conditions."""
    with locked(folder) as manifest:
        for cond in conditions:
            manifest["skipped"][cond] = record


def read_part(folder: Path, manifest: dict[str, Any], name: str,
              conditions: list[str] | None = None) -> pd.DataFrame:
    """A part file (only the rows of ``conditions``, when given), checked against the sha256 its manifest
    records."""
    path = folder / name
    if name not in manifest["parts"]:
        raise StoreConflict(f"{path}: not listed in {folder / MANIFEST}")
    data = path.read_bytes()
    if sha256(data) != manifest["parts"][name]:
        raise StoreConflict(f"{path}: content does not match the sha256 in {folder / MANIFEST} (file changed or "
                            "corrupt)")
    return pd.read_parquet(io.BytesIO(data), filters=None if conditions is None else
                           [("condition", "in", conditions)])


def rows_of(part: pd.DataFrame) -> dict[str, Any]:
    """Row positions of each condition in a part."""
    return part.groupby("condition", sort=False).indices


def compact(folder: Path) -> None:
    """Merge each measurement's parts of one column set into one part (after a sweep flushed several)."""
    with locked(folder) as manifest:
        conds = manifest["conditions"]
        by_part: dict[str, list[str]] = {}
        for cond, rec in conds.items():
            for t in rec["tables"].values():
                by_part.setdefault(t["part"], []).append(cond)
        measurements = {p.rsplit("-", 1)[0] for p in by_part}
        for m in measurements:
            parts = [p for p in by_part if p.rsplit("-", 1)[0] == m]
            if len(parts) < 2:
                continue
            tables = []
            for p in parts:
                part = read_part(folder, manifest, p)
                idx = rows_of(part)
                tables += [(c, part.take(idx[c])[conds[c]["tables"][m]["columns"]].reset_index(drop=True))
                           for c in by_part[p]]
            where = _write_parts(folder, manifest, m, tables)
            for c, _ in tables:
                conds[c]["tables"][m]["part"] = where[c]
