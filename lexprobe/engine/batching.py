"""How the engine splits a stimulus set into forward passes, and what one pass holds.

A traced forward costs a fixed overhead besides its arithmetic (nnsight's hooks on every module, one read per site),
which a small model feels on every batch: on the pythia-14m shape, 64 sentences per pass cost 1.3x a bare forward
and the whole 336-sentence set in one pass 1.1x. A large model feels the opposite: the engine keeps every layer's
hidden states, and on the pythia-410m shape passes of 256 sentences cost 1.17x where passes of about 36 cost 1.05x
(``benchmarks/extract_speed.py``, CPU time). So by default a batch is as many sentences as keep its activations
(every layer's hidden states and attention, float32, at the batch's longest sentence) under :data:`BATCH_BYTES`:
the whole set on the organism and on pythia-14m, a few dozen sentences on pythia-410m. A fixed ``batch_size``
still wins where one is given. Batching changes no result beyond float32 rounding (tested).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lexprobe.base.lazy import torch

if TYPE_CHECKING:
    from lexprobe.engine.sites import Sites

BATCH_BYTES = 32 << 20  # activations of one forward pass when the batch size is left to the engine


def activation_bytes(sites: Sites, n: int, width: int) -> int:
    """Bytes of ``n`` sentences' float32 hidden states (L+1 of them) and attention (L layers) at ``width`` tokens."""
    per_sentence = width * ((sites.n_layers + 1) * sites.n_heads * sites.head_dim
                            + sites.n_layers * sites.n_heads * width)
    return 4 * n * per_sentence


def split_rows(sites: Sites, order: torch.Tensor, lengths: torch.Tensor,
               batch_size: int | None = None) -> list[torch.Tensor]:
    """``order`` (sentence rows, in the order they run) cut into batches: ``batch_size`` rows each, or (None) each
    batch as long as its :func:`activation_bytes` at its longest sentence stay under :data:`BATCH_BYTES` (at
    least one row per batch)."""
    if batch_size is not None:
        return list(torch.split(order, check_batch_size(batch_size)))
    out, start, width = [], 0, 0
    for i, row in enumerate(order.tolist()):
        width = max(width, int(lengths[row]))
        if i > start and activation_bytes(sites, i + 1 - start, width) > BATCH_BYTES:
            out.append(order[start:i])
            start, width = i, int(lengths[row])
    out.append(order[start:])
    return out


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` itself when it is at least 1 sentence, else a ValueError that says what to give."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: give at least 1 sentence per forward pass, or leave it unset "
                         f"(as many sentences as fit in {BATCH_BYTES >> 20} MiB of activations)")
    return batch_size
