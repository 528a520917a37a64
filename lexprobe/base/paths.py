"""One place that resolves where lexprobe reads shipped data and writes caches and results."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """Folder of shipped data (stimuli, organism lexicon); ``LEXPROBE_DATA`` overrides it."""
    d = Path(os.environ.get("LEXPROBE_DATA", REPO_ROOT / "data"))
    if not d.is_dir():
        raise FileNotFoundError(f"lexprobe data folder not found at {d}; set LEXPROBE_DATA to the repo's data/ folder")
    return d


def home() -> Path:
    """Root for caches (organism suites, results); ``LEXPROBE_HOME`` overrides ``<repo>/.lexprobe``."""
    env = os.environ.get("LEXPROBE_HOME")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / ".lexprobe"


def results_dir() -> Path:
    """Default results store root."""
    return home() / "results"


def smoke() -> bool:
    """True when ``LEXPROBE_SMOKE=1``: every entry point picks tiny settings that run in seconds."""
    return os.environ.get("LEXPROBE_SMOKE", "") not in ("", "0", "false", "False")
