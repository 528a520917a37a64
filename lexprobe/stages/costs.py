"""What a stage will cost, worked out before it runs (``lexprobe plan``): each stage's :meth:`cost` returns a
:class:`StageCost` from a :class:`Costing`, the per-unit costs that :mod:`lexprobe.plan` calibrated on this machine
for each model of the suite. Units are (checkpoint, condition) pairs measured; forward passes are sentences run
through a model; files and disk are the packed results store's; time is on this machine's sweep workers."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

import pandas as pd

from lexprobe.stimuli.tables import Stimuli


@dataclass
class StageCost:
    """One stage's estimated cost, summed over the suite's models and seeds."""

    stage: str
    units: int = 0
    forward: int = 0
    files: int = 0  # in the results store
    cache: int = 0  # of the stage's stage-cache entry
    disk: float = 0.0
    seconds: float = 0.0

    def add(self, units: int, forward: float, files: int, disk: float, seconds: float) -> None:
        """Count ``units`` more units, ``forward`` more forward passes, files, bytes and seconds."""
        self.units += units
        self.forward += int(forward)
        self.files += files
        self.disk += disk
        self.seconds += seconds


@dataclass(frozen=True)
class ModelCost:
    """One model of the suite on this machine: its shape, and one unit's load and measure seconds and result-table
    bytes on the study's main stimulus set (from the calibration)."""

    model: str
    n_layers: int
    n_heads: int
    load_seconds: float
    measure_seconds: float
    table_bytes: dict[str, float]

    def scaled(self, main: Stimuli, other: Stimuli) -> tuple[float, dict[str, float]]:
        """Measure seconds and table bytes of a unit of ``other``, from the main set's by sentences and pairs."""
        per_sentence = len(other.sentences) / len(main.sentences)
        rows = {"distances": len(other.pairs) / len(main.pairs), "heads": per_sentence, "embeddings": per_sentence}
        return self.measure_seconds * per_sentence, {m: b * rows[m] for m, b in self.table_bytes.items()}


@dataclass(frozen=True)
class Costing:
    """What every stage's cost is worked out from: each model's :class:`ModelCost`, the sweep's worker processes,
    and the heads assumed to pass discovery per seed (the real ones are known only after stage 2)."""

    models: tuple[ModelCost, ...]
    workers: int
    assumed_heads: int = 2


def stage_cache_files(cls: type) -> int:
    """Files of one stage cache entry of ``cls``: its manifest and a table per DataFrame field, nested dataclass
    fields included (stimulus sets a stage keeps are not counted)."""
    hints = typing.get_type_hints(cls)
    n = 1
    for f in dataclasses.fields(cls):
        inner = [t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if dataclasses.is_dataclass(t)]
        if hints[f.name] is pd.DataFrame:
            n += 1
        elif inner:
            n += stage_cache_files(typing.cast(type, inner[0])) - 1
    return n
