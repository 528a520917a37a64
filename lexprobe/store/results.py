"""Results store: per checkpoint (suite, stimuli, model, seed, step), every condition's tables packed together.

Layout: ``ROOT/<suite>/<stimuli>/<model>/seed<k>/step<N>/`` holds a ``manifest.json`` and, per measurement, a
Parquet part or two with a ``condition`` column (:mod:`lexprobe.store.pack`), so the number of files grows with
checkpoints, not with checkpoints x conditions. Parts are written to a temporary name and renamed into place, the
manifest last, so an interrupted run leaves no partial result: a (checkpoint, condition) unit counts as finished
only when the manifest lists it. Each unit's sidecar holds a fingerprint of everything that determines the numbers
(engine config, stimuli hash, condition); finding a finished unit with a different fingerprint raises
:class:`StoreConflict` instead of mixing results. A checkpoint that could not be loaded is recorded as skipped.
Stores written by earlier versions (one folder per condition) are refused with the command that packs them
(:mod:`lexprobe.store.migrate`).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lexprobe.checkpoints.suites import Checkpoint
from lexprobe.store import pack
from lexprobe.store.pack import StoreConflict

KEY_COLUMNS = ["suite", "stimuli", "condition", "model", "seed", "step"]
LIBRARIES = ("lexprobe", "torch", "transformers", "nnsight", "numpy", "pandas", "pyarrow")
__all__ = ["KEY_COLUMNS", "OldLayout", "ResultsStore", "StoreConflict", "Unit", "load_results"]


class OldLayout(RuntimeError):
    """The store holds results in the per-condition layout of earlier versions."""


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape results, plus Python's."""
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except Exception:  # noqa: BLE001 - a library missing from metadata is recorded, not fatal
            out[lib] = "unknown"
    return out


@dataclass(frozen=True)
class Unit:
    """Address of one checkpoint's results for one stimulus set and condition."""

    suite: str
    stimuli: str
    condition: str
    model: str
    seed: int
    step: int

    @classmethod
    def of(cls, ck: Checkpoint, stimuli: str, condition: str = "intact") -> Unit:
        return cls(ck.suite, stimuli, condition, ck.model, int(ck.seed), int(ck.step))

    def relpath(self) -> Path:
        """The checkpoint folder, relative to the store's root (shared by all conditions)."""
        return Path(self.suite, self.stimuli, self.model, f"seed{self.seed}", f"step{self.step}")

    def order(self) -> tuple[str, ...]:
        """Sort key: the order in which loads return units (that of the per-condition folders of old)."""
        return self.suite, self.stimuli, self.condition, self.model, f"seed{self.seed}", f"step{self.step}"


class ResultsStore:
    """Packed Parquet store with resumable, atomic, fingerprint-checked units."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._manifests: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}
        self._checked = False

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for a worker process) without the manifests read so far."""
        return {"root": self.root, "_manifests": {}, "_checked": False}

    def dir(self, unit: Unit) -> Path:
        """The folder of the unit's checkpoint."""
        return self.root / unit.relpath()

    def _check_layout(self) -> None:
        if self._checked:
            return
        old = next((p for p in self.root.glob("*/*/*/*/seed*/step*") if p.parts[-6] != "_stages"), None)
        if old is not None:
            raise OldLayout(f"{self.root} holds results in the one-folder-per-condition layout of earlier lexprobe "
                            f"versions (e.g. {old}); pack them once with `lexprobe store migrate {self.root}` "
                            "(every table's sha256 is checked, cached stage results stay valid)")
        self._checked = True

    def manifest(self, folder: Path) -> dict[str, Any]:
        """A checkpoint folder's manifest (re-read only when the file changed)."""
        self._check_layout()
        path = folder / pack.MANIFEST
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return pack.read_manifest(folder)
        stamp = (st.st_mtime_ns, st.st_size)
        known = self._manifests.get(folder)
        if known is None or known[0] != stamp:
            known = (stamp, pack.read_manifest(folder))
            self._manifests[folder] = known
        return known[1]

    def sidecar(self, unit: Unit, measurement: str) -> dict[str, Any] | None:
        """The sidecar of a finished measurement (fingerprint, sha256 of its table, rows, meta), or None."""
        rec = self.manifest(self.dir(unit))["conditions"].get(unit.condition)
        if rec is None or measurement not in rec["tables"]:
            return None
        t = rec["tables"][measurement]
        return {**rec["meta"], "measurement": measurement, "rows": t["rows"], "sha256": t["sha256"]}

    def is_done(self, unit: Unit, measurements: tuple[str, ...], fp: str) -> bool:
        """True when every measurement is finished with fingerprint ``fp``; StoreConflict on a mismatch."""
        for m in measurements:
            side = self.sidecar(unit, m)
            if side is None:
                return False
            if side["fingerprint"] != fp:
                raise StoreConflict(
                    f"{self.dir(unit) / pack.MANIFEST}: condition {unit.condition!r} ({m}) stored with fingerprint "
                    f"{side['fingerprint']} (stimuli hash {side['stimuli']['hash']}, config {side['config']}), but "
                    f"this run has fingerprint {fp}. Use another --out folder or stimuli name, or delete the old "
                    "results."
                )
        return True

    def write_many(self, entries: list[tuple[Unit, dict[str, pd.DataFrame], dict]]) -> None:
        """Store several conditions of one checkpoint at once (one part per measurement), sidecars stamped."""
        self._check_layout()
        folders = {self.dir(u) for u, _, _ in entries}
        if len(folders) != 1:
            raise ValueError(f"write_many takes the conditions of one checkpoint, got {sorted(map(str, folders))}")
        stamp = {"versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        pack.write(folders.pop(), [pack.Entry(u.condition, tables, {**meta, "unit": u.__dict__, **stamp})
                                   for u, tables, meta in entries])

    def write(self, unit: Unit, tables: dict[str, pd.DataFrame], meta: dict) -> None:
        """Store one condition's tables (the measurements given replace the ones stored before)."""
        self.write_many([(unit, tables, meta)])

    def compact(self, unit: Unit) -> None:
        """Merge the parts of the unit's checkpoint written by several flushes into one per measurement."""
        pack.compact(self.dir(unit))

    def write_skipped(self, unit: Unit, reason: str) -> None:
        """Record that a checkpoint could not be measured (retried on the next run)."""
        self._check_layout()
        rec = {"unit": unit.__dict__, "reason": reason, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        pack.write_skipped(self.dir(unit), [unit.condition], rec)

    def _folders(self, where: dict[str, object]) -> list[Path]:
        seg = [str(where[k]) if isinstance(where.get(k), (str, int)) else "*" for k in ("suite", "stimuli", "model")]
        return [p.parent for p in self.root.glob(f"{'/'.join(seg)}/seed*/step*/{pack.MANIFEST}")]

    def units(self, measurement: str, **where: object) -> list[tuple[Unit, dict]]:
        """Finished units of a measurement, filtered by key columns (a value or a list of values)."""
        self._check_layout()
        found = []
        for folder in self._folders(where):
            for rec in self.manifest(folder)["conditions"].values():
                unit = Unit(**rec["meta"]["unit"])
                side = self.sidecar(unit, measurement)
                if side is not None and all(_match(getattr(unit, k), v) for k, v in where.items() if v is not None):
                    found.append((unit, side))
        return sorted(found, key=lambda us: us[0].order())

    def provenance(self, measurement: str = "distances", **where: object) -> pd.DataFrame:
        """Per finished unit: resolved commit, weights fingerprint and when it was measured (``created``, local time
        with its UTC offset), plus ``same_as_previous`` flagging a
        checkpoint whose weights equal the previous step's (e.g. hub branches that serve the final weights)."""
        rows = [{**unit.__dict__, "commit": side.get("commit"), "weights_hash": side.get("weights_hash"),
                 "created": side.get("created")} for unit, side in self.units(measurement, **where)]
        df = pd.DataFrame(rows, columns=KEY_COLUMNS + ["commit", "weights_hash", "created"]).sort_values(KEY_COLUMNS)
        prev = df.groupby(["suite", "stimuli", "condition", "model", "seed"])["weights_hash"].shift()
        return df.assign(same_as_previous=df["weights_hash"].eq(prev)).reset_index(drop=True)

    def skipped(self, **where: object) -> pd.DataFrame:
        """Table of checkpoints recorded as skipped, with reasons."""
        self._check_layout()
        recs = [rec for folder in self._folders({}) for rec in self.manifest(folder)["skipped"].values()]
        rows = [{**rec["unit"], "reason": rec["reason"]} for rec in recs
                if all(_match(rec["unit"][k], v) for k, v in where.items() if v is not None)]
        return pd.DataFrame(rows, columns=KEY_COLUMNS + ["reason"]).sort_values(KEY_COLUMNS, ignore_index=True)

    def load(self, measurement: str, **where: object) -> pd.DataFrame:
        """One long DataFrame across units, key columns first; refuses to mix fingerprints."""
        found = self.units(measurement, **where)
        if not found:
            raise FileNotFoundError(f"no finished {measurement!r} results under {self.root} matching {where}")
        fps: dict[tuple, set[str]] = {}
        for unit, side in found:
            fps.setdefault((unit.suite, unit.stimuli, unit.condition), set()).add(side["fingerprint"])
        mixed = {k: v for k, v in fps.items() if len(v) > 1}
        if mixed:
            raise StoreConflict(f"results with different fingerprints would be mixed: {mixed}")
        tables = [self.manifest(self.dir(u))["conditions"][u.condition]["tables"][measurement] for u, _ in found]
        wanted: dict[tuple[Path, str], set[str]] = {}
        for (unit, _), table in zip(found, tables):
            wanted.setdefault((self.dir(unit), table["part"]), set()).add(unit.condition)
        parts = {}
        for (folder, name), conds in wanted.items():
            manifest = self.manifest(folder)
            everyone = {c for c, rec in manifest["conditions"].items()
                        if rec["tables"].get(measurement, {}).get("part") == name}
            part = pack.read_part(folder, manifest, name, None if conds >= everyone else sorted(conds))
            parts[folder, name] = (part, pack.rows_of(part))
        pieces: dict[tuple[Path, str], list[np.ndarray]] = {}  # per part: its units' rows, in load order
        taken: dict[tuple[Path, str], int] = {}
        spans = []  # per unit: its part, where its rows start in that part's piece, how many
        for (unit, _), table in zip(found, tables):
            key = (self.dir(unit), table["part"])
            rows = parts[key][1].get(unit.condition, NO_ROWS)  # an empty table has no rows in its part
            pieces.setdefault(key, []).append(rows)
            spans.append((key, taken.get(key, 0), len(rows)))
            taken[key] = taken.get(key, 0) + len(rows)
        start: dict[tuple[Path, str], int] = {}
        frames: list[pd.DataFrame] = []
        offset = 0
        for key, rows in pieces.items():  # one take per part (a part's units share its columns)
            start[key], offset = offset, offset + taken[key]
            part = parts[key][0]
            frames.append(part[[c for c in part.columns if c != "condition"]].take(np.concatenate(rows)))
        order = np.concatenate([np.arange(start[key] + at, start[key] + at + n) for key, at, n in spans])
        df = pd.concat(frames, ignore_index=True).take(order).reset_index(drop=True)
        lengths = [n for *_, n in spans]
        at = pa.array(np.repeat(np.arange(len(found)), lengths))
        for k in reversed(KEY_COLUMNS):
            values = pa.array([getattr(u, k) for u, _ in found], type=pa.int64() if k in ("seed", "step") else None)
            df.insert(0, k, values.take(at).to_pandas())  # a key per row, without a Python string per row
        return df


NO_ROWS = np.array([], dtype=np.intp)


def _match(value: object, wanted: object) -> bool:
    if isinstance(wanted, (list, tuple, set)):
        return value in wanted
    return value == wanted


def load_results(measurement: str = "distances", root: str | Path | None = None, **where: object) -> pd.DataFrame:
    """Load one measurement across steps, seeds and models from the default (or given) results store."""
    from lexprobe.base.paths import results_dir

    return ResultsStore(root or results_dir()).load(measurement, **where)
