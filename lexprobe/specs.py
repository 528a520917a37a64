"""Suite specs as the command line and notebooks write them: ``organism[-PROFILE]`` (trained on first use) or any
spec :func:`lexprobe.suites.resolve_suite` knows (Pythia, local folders, hub caches).

This module sits above both :mod:`lexprobe.suites` and :mod:`lexprobe.organism`, so ``suites`` never imports the
organism (which builds on ``suites``).
"""

from __future__ import annotations

from lexprobe.organism.suite import ensure_trained
from lexprobe.suites import Suite, resolve_suite


def resolve(spec: str, cache_dir: str | None = None) -> Suite:
    """The suite a spec names; ``organism`` (LEXPROBE_SMOKE=1: its smoke profile) or ``organism-PROFILE`` trains
    what is missing first."""
    if spec == "organism" or spec.startswith("organism-"):
        return ensure_trained(spec.partition("-")[2] or None)
    return resolve_suite(spec, cache_dir)
