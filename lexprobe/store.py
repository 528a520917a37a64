"""Results store: one Parquet table + JSON sidecar per (suite, stimuli, condition, model, seed, step, measurement).

Layout: ``ROOT/<suite>/<stimuli>/<condition>/<model>/seed<k>/step<N>/<measurement>.parquet`` (+ ``.json``).
Every file is written to a temporary name and renamed into place, the sidecar last, so an interrupted run leaves
no partial result: a unit counts as finished only when its sidecar exists. The sidecar holds a fingerprint of
everything that determines the numbers (engine config, stimuli hash, condition); finding a finished unit with a
different fingerprint raises :class:`StoreConflict` instead of mixing results. A checkpoint that could not be
loaded gets a ``skipped.json`` record.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

from lexprobe.files import atomic_write, fingerprint  # noqa: F401 - fingerprint: callers import it from here
from lexprobe.suites import Checkpoint

KEY_COLUMNS = ["suite", "stimuli", "condition", "model", "seed", "step"]
LIBRARIES = ("lexprobe", "torch", "transformers", "nnsight", "numpy", "pandas", "pyarrow")


class StoreConflict(RuntimeError):
    """A finished unit exists with a different fingerprint (config or stimuli changed)."""


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
        return Path(self.suite, self.stimuli, self.condition, self.model, f"seed{self.seed}", f"step{self.step}")


class ResultsStore:
    """Parquet + JSON sidecar store with resumable, atomic, fingerprint-checked units."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def dir(self, unit: Unit) -> Path:
        return self.root / unit.relpath()

    def sidecar(self, unit: Unit, measurement: str) -> dict[str, Any] | None:
        """The sidecar of a finished measurement, or None."""
        p = self.dir(unit) / f"{measurement}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def is_done(self, unit: Unit, measurements: tuple[str, ...], fp: str) -> bool:
        """True when every measurement is finished with fingerprint ``fp``; StoreConflict on a mismatch."""
        for m in measurements:
            side = self.sidecar(unit, m)
            if side is None:
                return False
            if side["fingerprint"] != fp:
                raise StoreConflict(
                    f"{self.dir(unit) / m}: stored with fingerprint {side['fingerprint']} "
                    f"(stimuli hash {side['stimuli']['hash']}, config {side['config']}), but this run has "
                    f"fingerprint {fp}. Use another --out folder or stimuli name, or delete the old results."
                )
        return True

    def write(self, unit: Unit, tables: dict[str, pd.DataFrame], meta: dict) -> None:
        """Write each table atomically, then its sidecar (the 'finished' marker)."""
        d = self.dir(unit)
        d.mkdir(parents=True, exist_ok=True)
        for stale in d.glob(".tmp-*"):
            stale.unlink(missing_ok=True)
        (d / "skipped.json").unlink(missing_ok=True)
        for name, df in tables.items():
            buf = io.BytesIO()
            df.to_parquet(buf, index=False)
            data = buf.getvalue()
            atomic_write(d / f"{name}.parquet", data)
            side = {**meta, "measurement": name, "rows": len(df), "sha256": hashlib.sha256(data).hexdigest(),
                    "unit": unit.__dict__, "versions": library_versions(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            atomic_write(d / f"{name}.json", json.dumps(side, indent=1, default=str).encode())

    def write_skipped(self, unit: Unit, reason: str) -> None:
        """Record that a checkpoint could not be measured (retried on the next run)."""
        d = self.dir(unit)
        d.mkdir(parents=True, exist_ok=True)
        rec = {"unit": unit.__dict__, "reason": reason, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write(d / "skipped.json", json.dumps(rec, indent=1).encode())

    def units(self, measurement: str, **where: object) -> list[tuple[Unit, dict]]:
        """Finished units of a measurement, filtered by key columns (a value or a list of values)."""
        found = []
        seg = [str(where[k]) if isinstance(where.get(k), (str, int)) else "*" for k in ("suite", "stimuli", "condition",
                                                                                       "model")]
        for side_path in sorted(self.root.glob(f"{'/'.join(seg)}/seed*/step*/{measurement}.json")):
            side = json.loads(side_path.read_text())
            unit = Unit(**side["unit"])
            if all(_match(getattr(unit, k), v) for k, v in where.items() if v is not None):
                found.append((unit, side))
        return found

    def provenance(self, measurement: str = "distances", **where: object) -> pd.DataFrame:
        """Per finished unit: resolved commit and weights fingerprint, plus ``same_as_previous`` flagging a
        checkpoint whose weights equal the previous step's (e.g. hub branches that serve the final weights)."""
        rows = [{**unit.__dict__, "commit": side.get("commit"), "weights_hash": side.get("weights_hash")}
                for unit, side in self.units(measurement, **where)]
        df = pd.DataFrame(rows, columns=KEY_COLUMNS + ["commit", "weights_hash"]).sort_values(KEY_COLUMNS)
        prev = df.groupby(["suite", "stimuli", "condition", "model", "seed"])["weights_hash"].shift()
        return df.assign(same_as_previous=df["weights_hash"].eq(prev)).reset_index(drop=True)

    def skipped(self, **where: object) -> pd.DataFrame:
        """Table of checkpoints recorded as skipped, with reasons."""
        rows = []
        for p in sorted(self.root.glob("*/*/*/*/seed*/step*/skipped.json")):
            rec = json.loads(p.read_text())
            if all(_match(rec["unit"][k], v) for k, v in where.items() if v is not None):
                rows.append({**rec["unit"], "reason": rec["reason"]})
        return pd.DataFrame(rows, columns=KEY_COLUMNS + ["reason"])

    def load(self, measurement: str, **where: object) -> pd.DataFrame:
        """One long DataFrame across units, key columns first; refuses to mix fingerprints."""
        found = self.units(measurement, **where)
        if not found:
            raise FileNotFoundError(f"no finished {measurement!r} results under {self.root} matching {where}")
        fps: dict[tuple, set[str]] = {}
        frames = []
        for unit, side in found:
            fps.setdefault((unit.suite, unit.stimuli, unit.condition), set()).add(side["fingerprint"])
            path = self.dir(unit) / f"{measurement}.parquet"
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != side["sha256"]:
                raise StoreConflict(f"{path}: content does not match its sidecar's sha256 (file changed or corrupt)")
            df = pd.read_parquet(io.BytesIO(data))
            for k in reversed(KEY_COLUMNS):
                df.insert(0, k, getattr(unit, k))
            frames.append(df)
        mixed = {k: v for k, v in fps.items() if len(v) > 1}
        if mixed:
            raise StoreConflict(f"results with different fingerprints would be mixed: {mixed}")
        return pd.concat(frames, ignore_index=True)


def _match(value: object, wanted: object) -> bool:
    if isinstance(wanted, (list, tuple, set)):
        return value in wanted
    return value == wanted


def load_results(measurement: str = "distances", root: str | Path | None = None, **where: object) -> pd.DataFrame:
    """Load one measurement across steps, seeds and models from the default (or given) results store."""
    from lexprobe.paths import results_dir

    return ResultsStore(root or results_dir()).load(measurement, **where)
