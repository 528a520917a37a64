"""The planted circuit: during training, cue information may reach an ambiguous noun only through chosen heads.

In every training sequence the attention edges to a cue's tokens from its noun's tokens (``readers="noun"``) or from
every later token of its sentence (``readers="sentence"``, the default: then no other head ever learns to read the
cue, e.g. from the sense-dependent continuation) are open in the **designated heads** (``Plant.n_heads`` heads, each
in a different layer, drawn from the training seed) and cut before the softmax in every other head: their scores
are set to the dtype's minimum, as
:class:`lexprobe.engine.interventions.EdgeKnockout` (``mode="pre"``) cuts them at analysis time, so the head's remaining
attention renormalises. The cut runs in a registered attention function (eager attention plus the per-layer,
per-head cut) that is switched on only for the training forward pass: saved checkpoints are ordinary checkpoints
of their family, measured without any mask.

A cut alone leaves the other heads' queries and keys free on those edges: the cut scores get no gradient, so at
analysis time, with no mask, a closed head may attend to the cue and pass on what training made the cue's
representation carry (measured: with the cut alone, cutting the designated heads' edges at analysis removed only
41-71% of best-layer R^2). With ``Plant.leak_penalty`` > 0 the training loss adds that weight times the **leak**: the
mean, over the closed heads' planted query rows, of the attention mass the head would give the cue's tokens without
the cut (the same scores, softmaxed under the causal mask only). The forward pass is unchanged; the penalty only
trains the closed heads not to look at the cue, so that at analysis time they do not.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from lexprobe.base.heads import Head

ATTENTION = "lexprobe_planted"


def closed_heads(open_heads: tuple[Head, ...], n_layers: int, n_heads: int) -> torch.Tensor:
    """(layers, heads) bool: True where the noun->cue edges are cut (every head but the designated ones)."""
    closed = torch.ones(n_layers, n_heads, dtype=torch.bool)
    for layer, head in open_heads:
        closed[layer, head] = False
    return closed


def closed_at(plant_heads: tuple[Head, ...], opens: tuple[int, ...], one: bool, step: int, batch: int,
              n_layers: int, n_heads: int, rng: np.random.Generator) -> torch.Tensor:
    """(batch, layers, heads) bool: where each training sequence's cue edges are cut at ``step``. A designated head
    is open from its ``opens`` step on (every step when ``opens`` is empty) and cut like every other head before it;
    ``one``: each sequence leaves exactly one of the open designated heads open, drawn from ``rng`` (an OR by design:
    neither can rely on the other)."""
    closed = torch.ones(batch, n_layers, n_heads, dtype=torch.bool)
    live = [h for h, o in zip(plant_heads, opens or (0,) * len(plant_heads)) if step >= o]
    if one and live:
        for row, k in enumerate(rng.integers(len(live), size=batch)):
            closed[row, live[k][0], live[k][1]] = False
    else:
        for layer, head in live:
            closed[:, layer, head] = False
    return closed


def _heads_of(flags: torch.Tensor, layer: int) -> torch.Tensor:
    """A (layers, heads) or per-sequence (batch, layers, heads) flag at one layer, as (batch or 1, heads, 1, 1)."""
    return (flags[layer][None] if flags.dim() == 2 else flags[:, layer])[:, :, None, None]


def planted_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor, scaling: float, dropout: float = 0.0,
                      edge_cut: torch.Tensor | None = None, closed: torch.Tensor | None = None,
                      leak: list[tuple[torch.Tensor, int]] | None = None, penalized: torch.Tensor | None = None,
                      pull: list[tuple[torch.Tensor, int]] | None = None,
                      pulled: dict[Head, torch.Tensor] | None = None,
                      **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The family's eager attention with the (b, q, k) ``edge_cut`` pairs masked in the heads that ``closed`` (layers,
    heads; or per sequence, batch x layers x heads) marks for this module's layer. With a ``leak`` list, appends this
    layer's (summed leak, planted rows): the attention mass on the cut keys without the cut of the closed heads (of
    those ``penalized`` marks, when given), summed over their query rows with a cut edge. With a ``pull`` list,
    appends per head of ``pulled`` ({(layer, head): its (b, q, k) edges}) in this layer the (summed attention mass
    on its edges, query rows with an edge)."""
    layer: int = module.layer_idx  # type: ignore[assignment]  # an int on the attention module of every family
    if pull is not None and pulled:
        pull.extend(_pulled_mass(query, key, attention_mask, scaling, layer, pulled))
    if edge_cut is not None and closed is not None:
        k = key.shape[-2]
        cut = (edge_cut[:, None] & _heads_of(closed, layer))[..., :k]  # (b, H, q, k)
        mask = attention_mask[..., :k].expand(-1, cut.shape[1], -1, -1)
        if leak is not None:
            keys = key.repeat_interleave(query.shape[1] // key.shape[1], 1)  # grouped-query: a key head per query
            unmasked = torch.softmax(torch.matmul(query, keys.transpose(2, 3)) * scaling + mask, dim=-1,
                                     dtype=torch.float32)
            counted = cut if penalized is None else cut & _heads_of(penalized, layer)
            leak.append(((unmasked * counted).sum(), int(counted.any(-1).sum())))
        attention_mask = torch.where(cut, torch.finfo(mask.dtype).min, mask)
    eager = importlib.import_module(type(module).__module__).eager_attention_forward  # the family's own
    return eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


def _pulled_mass(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor, scaling: float, layer: int,
                 pulled: dict[Head, torch.Tensor]) -> list[tuple[torch.Tensor, int]]:
    """Per pulled head of ``layer``: (attention mass on its edges summed over its query rows with an edge, rows)."""
    out = []
    group = query.shape[1] // key.shape[1]
    for (la, he), edges in pulled.items():
        if la != layer:
            continue
        k = key.shape[-2]
        scores = torch.matmul(query[:, he], key[:, he // group].transpose(1, 2)) * scaling + mask[:, 0, :, :k]
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        e = edges[..., :k]
        out.append(((probs * e).sum(), int(e.any(-1).sum())))
    return out


AttentionInterface.register(ATTENTION, planted_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, eager_mask)  # an explicit causal mask, as eager attention gets


@contextmanager
def attention_of(model: PreTrainedModel, implementation: str) -> Iterator[None]:
    """Run the model with another attention implementation for the duration of the block (always restored)."""
    before = model.config._attn_implementation
    model.config._attn_implementation = implementation
    try:
        yield
    finally:
        model.config._attn_implementation = before


def planted_forward(model: PreTrainedModel, input_ids: torch.Tensor, edge_cut: torch.Tensor, closed: torch.Tensor,
                    leak: list[tuple[torch.Tensor, int]] | None = None, penalized: torch.Tensor | None = None,
                    pull: list[tuple[torch.Tensor, int]] | None = None,
                    pulled: dict[Head, torch.Tensor] | None = None, **kwargs: Any) -> Any:
    """The model's output with the ``edge_cut`` (b, T, T) pairs cut in the ``closed`` heads ((layers, heads), or per
    sequence); a ``leak`` list collects each layer's unmasked mass on the cut edges of the ``penalized`` closed heads
    (all of them by default), a ``pull`` list the ``pulled`` heads' mass on their edges (:func:`planted_attention`)."""
    with attention_of(model, ATTENTION):
        return model(input_ids=input_ids, edge_cut=edge_cut, closed=closed, leak=leak, penalized=penalized,
                     pull=pull, pulled=pulled, **kwargs)


def mean_leak(leak: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
    """The leak of one forward pass: attention mass on the cut keys without the cut, averaged over every closed
    head's planted query rows (0 when there are none). Also the mean mass of a ``pull`` list."""
    rows = sum(n for _, n in leak)
    total = sum((m for m, _ in leak), torch.zeros(()))
    return total / max(rows, 1)


class DecoyHold:
    """Holds decoy heads unable to carry anything (:data:`lexprobe.organism.profiles.DECOY_KINDS`): ``inert`` heads'
    output columns at 0; ``constant`` and ``previous`` heads' value weights at 0, their value bias at a fixed
    vector and their output columns at their initial values, so that whatever they attend to they write one fixed
    non-zero vector. :meth:`apply` after every optimizer step keeps it exact (GPT-NeoX: packed [Q|K|V] per head with
    biases; other families are refused)."""

    def __init__(self, model: PreTrainedModel, decoys: tuple[tuple[int, int, str], ...], seed: int) -> None:
        if decoys and model.config.model_type != "gpt_neox":
            raise ValueError(f"decoy heads are built for gpt_neox (packed QKV with biases), not "
                             f"{model.config.model_type}")
        self.decoys = decoys
        self.fixed: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        gen = torch.Generator().manual_seed(int(seed) * 1000 + 7)
        for layer, head, kind in decoys:
            _, _, dense_w = self._parts(model, layer, head)
            if kind != "inert":
                hd = dense_w.shape[1]
                self.fixed[layer, head] = (torch.randn(hd, generator=gen) * 0.5, dense_w.detach().clone())

    @staticmethod
    def _parts(model: PreTrainedModel, layer: int, head: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(value weight rows, value bias, output columns) of one GPT-NeoX head, as views of the parameters."""
        att: Any = model.get_submodule(f"gpt_neox.layers.{layer}.attention")
        hd = model.config.hidden_size // model.config.num_attention_heads
        v = slice(head * 3 * hd + 2 * hd, head * 3 * hd + 3 * hd)
        return (att.query_key_value.weight.data[v], att.query_key_value.bias.data[v],
                att.dense.weight.data[:, head * hd:(head + 1) * hd])

    @torch.no_grad()
    def apply(self, model: PreTrainedModel) -> None:
        for layer, head, kind in self.decoys:
            value_w, value_b, dense_w = self._parts(model, layer, head)
            if kind == "inert":
                dense_w.zero_()
                continue
            bias, columns = self.fixed[layer, head]
            value_w.zero_()
            value_b.copy_(bias)
            dense_w.copy_(columns)
