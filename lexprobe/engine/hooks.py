"""What the engine calls inside one trace, and what those calls see: the edit hooks of an intervention
(:class:`Edit`), the traced batch (:class:`Batch`) and the intact layers the engine reuses (:class:`IntactLayers`).

:mod:`lexprobe.engine.extract` runs any :class:`Edit`; :mod:`lexprobe.engine.interventions` defines the kinds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from lexprobe.base.heads import Head
from lexprobe.base.lazy import torch
from lexprobe.engine.conditions import Donor, Named
from lexprobe.engine.sites import Sites

if TYPE_CHECKING:
    from lexprobe.stimuli import align

class Encoded(Protocol):
    """What interventions read of an encoded batch (:class:`lexprobe.stimuli.align.Encoded` provides it)."""

    input_ids: torch.Tensor  # (b, T)
    target_mask: torch.Tensor  # (b, T) bool
    cue_mask: torch.Tensor  # (b, T) bool


@dataclass
class Batch:
    """What an intervention sees of one traced batch: encodings, global sentence rows, prepared replacements."""

    enc: align.Encoded  # the engine reads all of it; interventions only the :class:`Encoded` part
    rows: torch.Tensor  # (b,) indices of the batch's sentences in the stimulus set's sentence table
    head_values: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)  # (key, layer) -> (b, T, H*hd)
    cut_keys: dict[str, torch.Tensor] = field(default_factory=dict)  # knockout key -> its (b, T) keys, once a batch
    intact: IntactLayers | None = None  # the intact model's layers on this batch, for layers an edit leaves alone


@dataclass
class IntactLayers:
    """The intact model's embedding output (b, T, d), every layer's output (b, T, d) and attention (b, H, T, T) on
    one batch: the engine reuses them below an intervention's :meth:`Intervention.first_layer`."""

    embed: torch.Tensor
    outputs: list[torch.Tensor]
    attention: list[torch.Tensor]


@dataclass(frozen=True)
class Edit(Named):
    """The hooks the engine calls inside one trace (a named condition whose subclasses override them); the
    interventions (:class:`lexprobe.engine.interventions.Intervention`) are its kinds."""

    kind: ClassVar[str] = "edit"

    def head_set(self) -> tuple[Head, ...] | None:
        return None

    def validate(self, n_layers: int, n_heads: int) -> None:
        """Raise ValueError naming any head outside the model."""
        bad = [h for h in (self.head_set() or ()) if h[0] >= n_layers or h[1] >= n_heads]
        if bad:
            raise ValueError(f"{self.condition}: heads {bad} do not exist in a model with {n_layers} layers x "
                             f"{n_heads} heads")

    def leaves(self) -> tuple[Edit, ...]:
        """The elementary interventions this one applies."""
        return (self,)

    def first_layer(self, n_layers: int) -> int:
        """The first layer this intervention changes (``n_layers``: none). Below it the intervened model computes
        exactly what the intact one does, so the engine reuses the intact layers there; 0 unless a kind knows
        better (the safe default for a new kind)."""
        return 0

    def value_layers(self, n_layers: int, n_heads: int) -> set[int]:
        """Layers whose intact head outputs the engine must collect before tracing (mean / resample)."""
        return set()

    def replacement(self, layer: int, outputs: torch.Tensor, lengths: torch.Tensor,
                    words: np.ndarray) -> torch.Tensor:
        """Per-sentence replacement values (n, T, H*hd) for ``layer``, from intact outputs (n, T, H*hd)."""
        raise NotImplementedError(f"{self.kind} needs no replacement values")

    def edit(self, sites: Sites, layer: int, batch: Batch) -> None:
        """Edit layer ``layer`` inside the trace (called before the layer's outputs are read)."""

    @contextmanager
    def weights(self, sites: Sites, donor: Donor | None
                ) -> Iterator[None]:
        """Weight edits for the duration of the block (always restored)."""
        yield
