"""``lexprobe store migrate``: pack a store of the old one-folder-per-condition layout into the packed layout.

Old layout: ``ROOT/<suite>/<stimuli>/<condition>/<model>/seed<k>/step<N>/<measurement>.parquet`` + ``.json``
sidecar (+ ``skipped.json``). Each old table is checked against its sidecar's sha256, stored with that same content
hash (so cached stage results, keyed on it, stay valid) and its sidecar, one checkpoint at a time; a checkpoint's
old folders are deleted only once its manifest is written, so an interrupted migration resumes where it stopped.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd

from lexprobe.base.progress import tqdm
from lexprobe.store import pack
from lexprobe.store.results import ResultsStore, StoreConflict

DROP = ("measurement", "rows", "sha256")  # per-table fields of an old sidecar; the rest is the condition's meta


def old_folders(root: Path) -> dict[tuple[str, ...], list[Path]]:
    """Old per-condition unit folders, grouped by checkpoint (suite, stimuli, model, seed, step)."""
    groups: dict[tuple[str, ...], list[Path]] = {}
    for d in sorted(root.glob("*/*/*/*/seed*/step*")):
        suite, stimuli, _, model, seed, step = d.relative_to(root).parts
        if suite != "_stages" and d.is_dir():
            groups.setdefault((suite, stimuli, model, seed, step), []).append(d)
    return groups


def _entry(d: Path) -> pack.Entry | None:
    """The condition stored in one old folder, its tables checked against their sidecars."""
    tables, shas, meta = {}, {}, None
    for side_path in sorted(d.glob("*.json")):
        if side_path.name == "skipped.json":
            continue
        side = json.loads(side_path.read_text())
        data = side_path.with_suffix(".parquet").read_bytes()
        if pack.sha256(data) != side["sha256"]:
            raise StoreConflict(f"{side_path.with_suffix('.parquet')}: content does not match its sidecar's sha256 "
                                "(file changed or corrupt); delete that folder and measure it again")
        m = side["measurement"]
        tables[m], shas[m] = pd.read_parquet(io.BytesIO(data)), side["sha256"]
        meta = meta or {k: v for k, v in side.items() if k not in DROP}
    return None if meta is None else pack.Entry(meta["unit"]["condition"], tables, meta, shas)


def migrate(root: str | Path, progress: bool = True) -> dict[str, int]:
    """Pack every old-layout unit under ``root``; counts of checkpoints, conditions and skipped records moved."""
    root = Path(root)
    store = ResultsStore(root)
    counts = {"checkpoints": 0, "conditions": 0, "skipped": 0}
    for key, folders in tqdm(old_folders(root).items(), desc="packing checkpoints", disable=not progress):
        target = root.joinpath(*key)
        entries = [e for d in folders if (e := _entry(d)) is not None]
        if entries:
            pack.write(target, entries)
        for d in folders:
            skip = d / "skipped.json"
            if skip.is_file():
                rec = json.loads(skip.read_text())
                pack.write_skipped(target, [rec["unit"]["condition"]], rec)
                counts["skipped"] += 1
        for d in folders:
            shutil.rmtree(d)
            for parent in list(d.parents)[:3]:  # step's seed, model and condition folders, once empty
                if parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
        counts["checkpoints"] += 1
        counts["conditions"] += len(entries)
    store.units("distances")  # the layout check passes now
    return counts
