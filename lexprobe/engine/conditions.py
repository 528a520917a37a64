"""What a sweep measures on a loaded checkpoint: a condition, one protocol for every kind.

A condition is a frozen value with a ``spec`` (every field that defines it, JSON-able), a store ``condition`` name
derived from the spec (kind, a readable label, the spec's hash), the checkpoint it copies weights from
(``donor_step``, if any), the tables it stores (``measurements``), :meth:`~Condition.measure` (those tables of
one loaded checkpoint) and :meth:`~Condition.cost` (intact forward passes per sentence, for ``lexprobe plan``).
The intact model is the condition :data:`lexprobe.engine.extract.INTACT`; interventions
(:mod:`lexprobe.engine.interventions`), patch maps (:mod:`lexprobe.engine.patches`) and stage 4's greedy searches
(:mod:`lexprobe.stages.patching`) are its siblings.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lexprobe.engine.config import ExtractConfig
    from lexprobe.stimuli.tables import Stimuli

CONDITION = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$")
Donor = dict[int, dict[str, "torch.Tensor"]]  # per layer: copies of its Q and K weights and biases, by name


class Condition(Protocol):
    """Anything the sweep measures under one store condition (see the module docstring)."""

    kind: ClassVar[str]

    @property
    def condition(self) -> str: ...

    def spec(self) -> dict[str, Any]: ...

    @property
    def donor_step(self) -> int | None: ...

    def donor_layers(self, n_layers: int) -> set[int]: ...

    def measurements(self, config: ExtractConfig) -> tuple[str, ...]: ...

    def measure(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stimuli: Stimuli,
                config: ExtractConfig, donor: Donor | None, progress: bool) -> dict[str, pd.DataFrame]: ...

    def cost(self, n_layers: int, n_heads: int) -> float: ...


@dataclass(frozen=True)
class Named:
    """A frozen spec with a derived store name: ``kind``, :meth:`label` and the spec's hash."""

    kind: ClassVar[str] = "condition"

    def spec(self) -> dict[str, Any]:
        """Every field that defines the condition, JSON-able; enters the results fingerprint."""
        return {"kind": self.kind, **json.loads(json.dumps(asdict(self)))}

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:10]

    def label(self) -> str:
        return ""

    @property
    def condition(self) -> str:
        """Store path segment: kind, a readable label, and the spec's hash."""
        name = "-".join(p for p in (self.kind, self.label(), self.key) if p)
        if not CONDITION.fullmatch(name):
            raise ValueError(f"derived condition {name!r} is not a safe path segment")
        return name

    @property
    def donor_step(self) -> int | None:
        """A checkpoint step whose weights the condition copies (same model and seed), if any."""
        return None

    def donor_layers(self, n_layers: int) -> set[int]:
        """Layers whose Q and K weights are copied from the donor checkpoint."""
        return set()

    def measurements(self, config: ExtractConfig) -> tuple[str, ...]:
        """The tables :meth:`measure` stores: the engine's (distances, heads, embeddings as configured)."""
        return config.measurements
