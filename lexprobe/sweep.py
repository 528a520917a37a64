"""Sweep a suite's checkpoints through the engine into the results store (resumable, skips bad checkpoints)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pandas as pd

from lexprobe.extract import MEASUREMENTS, ExtractConfig, LayerHook, measure
from lexprobe.paths import results_dir
from lexprobe.progress import tqdm
from lexprobe.stimuli import Stimuli
from lexprobe.store import ResultsStore, StoreConflict, Unit, fingerprint
from lexprobe.suites import CheckpointUnavailable, Suite, cached_commit, opened, suite_metadata

log = logging.getLogger(__name__)


def run_fingerprint(suite: Suite, stimuli: Stimuli, config: ExtractConfig, condition: str) -> str:
    """Fingerprint of everything that determines a unit's numbers (a retrained organism changes it too)."""
    return fingerprint({"stimuli": stimuli.hash, "config": config.fingerprint_fields(), "condition": condition,
                        "suite": suite.identity()})


def extract(suite: Suite, stimuli: Stimuli, steps: tuple[int, ...] | None = None,
            models: tuple[str, ...] | None = None, seeds: tuple[int, ...] | None = None,
            root: str | Path | None = None, config: ExtractConfig = ExtractConfig(), condition: str = "intact",
            hook: LayerHook | None = None, progress: bool = True) -> pd.DataFrame:
    """Measure every requested checkpoint not already in the store; returns one status row per checkpoint.

    ``condition`` names an intervention (``hook``) so its results sit beside the intact ones. Checkpoints that
    cannot be loaded are logged, recorded as skipped, and retried on the next run.
    """
    if (hook is None) != (condition == "intact"):
        raise ValueError("pass a hook exactly when condition is not 'intact'")
    store = ResultsStore(root or results_dir())
    measurements = tuple(m for m in MEASUREMENTS if m != "embeddings" or config.save_embeddings)
    fp = run_fingerprint(suite, stimuli, config, condition)
    status = []
    cks = suite.checkpoints(steps, models, seeds)
    bar = tqdm(cks, desc=f"{suite.name} checkpoints", disable=not progress)
    for ck in bar:
        bar.set_postfix_str(f"{ck.model} seed{ck.seed} step{ck.step}")
        unit = Unit.of(ck, stimuli.name, condition)
        if store.is_done(unit, measurements, fp):
            stored, now = store.sidecar(unit, measurements[0])["commit"], cached_commit(ck)
            if now is not None and stored != now:
                raise StoreConflict(f"{ck.label}: results were measured on commit {stored}, but {ck.revision} now "
                                    f"points to {now}; delete {store.dir(unit)} or use another --out")
            status.append({**unit.__dict__, "status": "cached", "reason": ""})
            continue
        try:
            with opened(ck) as loaded:
                tables = measure(loaded.model, loaded.tokenizer, stimuli, config, hook, progress)
                meta = {"fingerprint": fp, "config": config.as_dict(),
                        "stimuli": {"name": stimuli.name, "hash": stimuli.hash},
                        "checkpoint": ck.__dict__, "commit": loaded.commit, "weights_hash": loaded.weights_hash,
                        "n_layers": loaded.n_layers, "n_heads": loaded.n_heads, "suite": suite_metadata(suite)}
            store.write(unit, tables, meta)
            status.append({**unit.__dict__, "status": "measured", "reason": ""})
        except CheckpointUnavailable as err:
            warnings.warn(f"skipping {ck.label}: {err}", stacklevel=2)
            log.warning("skipping %s: %s", ck.label, err)
            store.write_skipped(unit, str(err))
            status.append({**unit.__dict__, "status": "skipped", "reason": str(err)})
    return pd.DataFrame(status)
