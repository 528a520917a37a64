"""Small helpers shared by the results store and the organism: atomic file writes and stable short hashes.

A base module: it imports nothing from lexprobe, so any layer may use it without creating an import cycle.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def fingerprint(fields: dict) -> str:
    """Stable short hash of a JSON-able dict."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it into place."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
