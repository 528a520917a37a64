"""Sweep a suite's checkpoints through the engine into the results store (resumable, skips bad checkpoints)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from lexprobe.extract import MEASUREMENTS, Donor, ExtractConfig, measure
from lexprobe.files import fingerprint
from lexprobe.interventions import Intervention, donor_weights
from lexprobe.paths import results_dir
from lexprobe.progress import tqdm
from lexprobe.sites import Sites
from lexprobe.stimuli import Stimuli
from lexprobe.store import ResultsStore, StoreConflict, Unit
from lexprobe.suites import Checkpoint, CheckpointUnavailable, Suite, cached_commit, opened, suite_metadata

log = logging.getLogger(__name__)


def condition_of(intervention: Intervention | None) -> str:
    """The store's condition segment: ``intact``, or the name derived from the intervention's spec."""
    return "intact" if intervention is None else intervention.condition


def run_fingerprint(suite: Suite, stimuli: Stimuli, config: ExtractConfig,
                    intervention: Intervention | None = None) -> str:
    """Fingerprint of everything that determines a unit's numbers (a retrained organism changes it too)."""
    fields = {"stimuli": stimuli.hash, "config": config.fingerprint_fields(), "condition": condition_of(intervention),
              "suite": suite.identity()}
    if intervention is not None:
        fields["intervention"] = intervention.spec()
    return fingerprint(fields)


def _donor(suite: Suite, ck: Checkpoint, intervention: Intervention | None, n_layers: int) -> Donor | None:
    """QKV weights of the checkpoint an intervention copies from (same model and seed), if it copies any."""
    if intervention is None or intervention.donor_step is None:
        return None
    with opened(suite.checkpoint(ck.model, ck.seed, intervention.donor_step)) as donor:
        return donor_weights(Sites(None, donor.model), intervention.donor_layers(n_layers))


def extract(suite: Suite, stimuli: Stimuli, steps: tuple[int, ...] | None = None,
            models: tuple[str, ...] | None = None, seeds: tuple[int, ...] | None = None,
            root: str | Path | None = None, config: ExtractConfig = ExtractConfig(),
            interventions: Sequence[Intervention | None] = (None,), progress: bool = True) -> pd.DataFrame:
    """Measure every requested (checkpoint, condition) not already in the store; one status row per pair.

    ``interventions`` lists the conditions to measure (``None`` is the intact model); each checkpoint is loaded
    once for all of them. Checkpoints that cannot be loaded are logged, recorded as skipped, and retried on the
    next run.
    """
    store = ResultsStore(root or results_dir())
    measurements = tuple(m for m in MEASUREMENTS if m != "embeddings" or config.save_embeddings)
    plans = [(iv, run_fingerprint(suite, stimuli, config, iv)) for iv in interventions]
    status = []
    cks = suite.checkpoints(steps, models, seeds)
    bar = tqdm(cks, desc=f"{suite.name} checkpoints", disable=not progress)
    for ck in bar:
        bar.set_postfix_str(f"{ck.model} seed{ck.seed} step{ck.step}")
        todo = []
        for iv, fp in plans:
            unit = Unit.of(ck, stimuli.name, condition_of(iv))
            if store.is_done(unit, measurements, fp):
                stored, now = store.sidecar(unit, measurements[0])["commit"], cached_commit(ck)
                if now is not None and stored != now:
                    raise StoreConflict(f"{ck.label}: results were measured on commit {stored}, but {ck.revision} "
                                        f"now points to {now}; delete {store.dir(unit)} or use another --out")
                status.append({**unit.__dict__, "status": "cached", "reason": ""})
            else:
                todo.append((iv, fp, unit))
        if not todo:
            continue
        try:
            with opened(ck) as loaded:
                for iv, fp, unit in todo:
                    donor = _donor(suite, ck, iv, loaded.n_layers)
                    tables = measure(loaded.model, loaded.tokenizer, stimuli, config, iv, donor, progress)
                    meta = {"fingerprint": fp, "config": config.as_dict(),
                            "stimuli": {"name": stimuli.name, "hash": stimuli.hash},
                            "intervention": None if iv is None else iv.spec(),
                            "checkpoint": ck.__dict__, "commit": loaded.commit, "weights_hash": loaded.weights_hash,
                            "n_layers": loaded.n_layers, "n_heads": loaded.n_heads, "suite": suite_metadata(suite)}
                    store.write(unit, tables, meta)
                    status.append({**unit.__dict__, "status": "measured", "reason": ""})
        except CheckpointUnavailable as err:
            warnings.warn(f"skipping {ck.label}: {err}", stacklevel=2)
            log.warning("skipping %s: %s", ck.label, err)
            for _, _, unit in todo:
                store.write_skipped(unit, str(err))
                status.append({**unit.__dict__, "status": "skipped", "reason": str(err)})
    return pd.DataFrame(status)
