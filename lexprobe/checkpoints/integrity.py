"""Checkpoint defects caught before anything is measured: an empty revision, weights identical to another
revision's, a ``model_type`` or shape that does not match the suite.

Users of the open suites meet all of these (a step that serves another step's upload, seed repos whose ``main`` is
empty, revisions of another family). :func:`problems` reads only what is on disk already (a hub cache's snapshot or
a local folder): the config, and a digest of the weight files (in a hub cache an LFS blob is named by the SHA-256 of
its content, so two revisions serving the same upload point to the same blob; other files are hashed). A revision
that is not on disk yet is left to the loader, which skips a missing one with its reason.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

from lexprobe.base.families import FAMILIES
from lexprobe.checkpoints.hubcache import read_ref, snapshots_folder
from lexprobe.checkpoints.suites import Checkpoint, CheckpointUnavailable

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def folder_of(ck: Checkpoint) -> Path | None:
    """The folder holding a checkpoint's files, if they are on disk (a hub cache snapshot or a local folder)."""
    if ck.path is not None:
        return Path(ck.path) if Path(ck.path).is_dir() else None
    assert ck.repo is not None and ck.revision is not None  # a checkpoint without a folder is a hub revision
    commit = read_ref(ck.cache_dir, ck.repo, ck.revision)
    folder = snapshots_folder(ck.cache_dir, ck.repo) / commit if commit else None
    return folder if folder is not None and folder.is_dir() else None


def weights_digest(folder: Path) -> str | None:
    """A digest of the weight files in ``folder`` (None when there are none): blob names where the files link
    into a hub cache's blobs, else their contents hashed. Kept per folder and modification time, so that every
    sweep of a study checks its checkpoints at the cost of a ``stat``."""
    return _digest(str(folder), folder.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _digest(folder_name: str, mtime_ns: int) -> str | None:
    folder = Path(folder_name)
    files = sorted(p for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES) and "optim" not in p.name)
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        if p.is_symlink() and p.resolve().parent.name == "blobs":
            h.update(p.resolve().name.encode())
            continue
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


KEYS = {"num_hidden_layers": ("num_hidden_layers", "n_layer"), "num_attention_heads": ("num_attention_heads", "n_head"),
        "hidden_size": ("hidden_size", "n_embd"), "num_key_value_heads": ("num_key_value_heads",),
        "head_dim": ("head_dim",)}


def config_of(folder: Path) -> SimpleNamespace:
    """A checkpoint folder's ``config.json`` read as JSON (a config class costs 30 ms per checkpoint, and importing
    transformers for it seconds), with the fields lexprobe checks under their common names: ``model_type``,
    ``num_hidden_layers``, ``num_attention_heads``, ``hidden_size`` (GPT-2's ``n_layer``... too), and
    ``num_key_value_heads``, ``head_dim`` where the config has them (else None)."""
    path = folder / "config.json"
    try:
        cfg = json.loads(path.read_text())
        fields = {name: next((cfg[k] for k in keys if k in cfg), None) for name, keys in KEYS.items()}
        if cfg.get("model_type") is None or None in (fields["num_hidden_layers"], fields["num_attention_heads"],
                                                     fields["hidden_size"]):
            raise KeyError("model_type, layers, heads or hidden size")
        return SimpleNamespace(model_type=str(cfg["model_type"]), **fields)
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointUnavailable(f"{path}: not a readable model config ({type(err).__name__}: {err})") from err


def shape_of(folder: Path) -> tuple[str, int, int, int]:
    """(model_type, layers, heads, hidden size) of a checkpoint folder."""
    c = config_of(folder)
    return c.model_type, int(c.num_hidden_layers), int(c.num_attention_heads), int(c.hidden_size)


def problems(cks: list[Checkpoint], model_type: str | None = None) -> dict[Checkpoint, str]:
    """Why each defective checkpoint among ``cks`` must not be measured (the others are absent): no weight files;
    a ``model_type`` lexprobe does not measure, or other than the suite's (``model_type``, where the suite names
    one), or a shape other than its first readable checkpoint's; weights identical to an earlier step's of the same
    model and seed."""
    out: dict[Checkpoint, str] = {}
    expected: tuple[tuple[str, int, int, int], Checkpoint] | None = None
    seen: dict[tuple[str, int, str], int] = {}
    for ck in sorted(cks, key=lambda c: (c.model, c.seed, c.step)):
        folder = folder_of(ck)
        if folder is None:
            continue  # not on disk: the loader skips it if it is missing
        digest = weights_digest(folder)
        if digest is None:
            out[ck] = (f"revision {ck.revision or folder.name} has no weight files (an empty branch, e.g. a seed "
                       "repo's main)")
            continue
        try:
            shape = shape_of(folder)
        except CheckpointUnavailable as err:
            out[ck] = str(err)
            continue
        if shape[0] not in FAMILIES:
            out[ck] = f"model_type {shape[0]!r} is not a family lexprobe measures ({', '.join(FAMILIES)})"
            continue
        if model_type and shape[0] != model_type:
            out[ck] = f"model_type {shape[0]!r} is not the suite's {model_type!r}"
            continue
        if expected is None:
            expected = (shape, ck)
        elif shape != expected[0]:
            out[ck] = (f"model_type/layers/heads/hidden {shape} do not match the suite's {expected[0]} (from "
                       f"{expected[1].label})")
            continue
        key = (ck.model, ck.seed, digest)
        if key in seen:
            out[ck] = f"weights identical to step {seen[key]}'s (another checkpoint's upload served under this name)"
        else:
            seen[key] = ck.step
    return out
