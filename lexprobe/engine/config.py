"""What the engine computes and how it batches (:class:`ExtractConfig`): part of every result's fingerprint."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lexprobe.engine.batching import check_batch_size

MEASUREMENTS = ("distances", "heads", "embeddings")
ENGINE_VERSION = 1


@dataclass(frozen=True)
class ExtractConfig:
    """What the engine computes and how it batches; part of every result's fingerprint."""

    batch_size: int | None = None  # sentences per forward pass; None: by memory (lexprobe.engine.batching)
    save_embeddings: bool = True
    dtype: str = "float32"
    device: str = "cpu"
    save_heads: bool = True

    def __post_init__(self) -> None:
        if self.batch_size is not None:
            check_batch_size(self.batch_size)  # refused here, before any checkpoint is trained or loaded

    @property
    def measurements(self) -> tuple[str, ...]:
        """The tables a measurement stores: distances always, heads and embeddings when asked."""
        keep = {"distances": True, "heads": self.save_heads, "embeddings": self.save_embeddings}
        return tuple(m for m in MEASUREMENTS if keep[m])

    def fingerprint_fields(self) -> dict[str, int | str]:
        """Fields that change the numbers: the engine version and a dtype other than float32 (float32 results keep
        the fingerprint they had before dtype was an option). Batch size, which tables are kept and the device
        do not: float32 on a GPU agrees with the CPU to rounding, and a sweep may move between them."""
        return {"engine_version": ENGINE_VERSION, **({"dtype": self.dtype} if self.dtype != "float32" else {})}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
