"""The measurement engine: one batched nnsight trace per batch of sentences -> tidy tables.

Per sentence it reads the target word's hidden state at every layer (HF ``hidden_states`` convention: index 0 is
the embedding output, the last index is after the final layer norm), mean-pooled over the target's tokens, and
every layer x head's attention weights, from which it derives per head:

* ``cue_attn``: attention mass on the cue's tokens, averaged over the target's tokens;
* ``prev_attn``: the head's previous-token attention, averaged over the sentence's non-target positions (the
  control for head discovery: a previous-token head also "attends to an adjacent cue");
* ``entropy``: Shannon entropy (nats) of the head's attention row at the target, averaged over target tokens.

Per pair it gives the cosine distance between the two sentences' target embeddings at every layer. The forward
stops before the LM head (not needed here), and an optional per-layer hook can intervene inside the same trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import nnsight
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lexprobe.align import Encoded, encode
from lexprobe.stimuli import Stimuli

MEASUREMENTS = ("distances", "heads", "embeddings")
ENGINE_VERSION = 1

LayerHook = Callable[[object, int], None]
"""``hook(model_envoy, layer_index)``: called inside the trace before layer ``layer_index``'s outputs are read,
so it may edit that layer's activations (e.g. the input of ``attention.dense``)."""


@dataclass(frozen=True)
class ExtractConfig:
    """What the engine computes and how it batches; part of every result's fingerprint."""

    batch_size: int = 64
    save_embeddings: bool = True
    dtype: str = "float32"
    device: str = "cpu"

    def fingerprint_fields(self) -> dict:
        """Fields that change the numbers: the engine version and a dtype other than float32 (float32 results keep
        the fingerprint they had before dtype was an option). Batch size, whether embeddings are kept and the device
        do not: float32 on a GPU agrees with the CPU to rounding, and a sweep may move between them."""
        return {"engine_version": ENGINE_VERSION, **({"dtype": self.dtype} if self.dtype != "float32" else {})}

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class BatchOutput:
    """Per-sentence tensors for one batch: embeddings (n, L+1, d); cue/prev attention and entropy (n, L, H)."""

    embeddings: torch.Tensor
    cue_attn: torch.Tensor
    prev_attn: torch.Tensor
    entropy: torch.Tensor

    def to(self, device: torch.device | str) -> "BatchOutput":
        return BatchOutput(*(getattr(self, f).to(device) for f in BatchOutput.__dataclass_fields__))


def trace_batch(envoy: nnsight.NNsight, enc: Encoded, hook: LayerHook | None = None) -> BatchOutput:
    """Run one traced forward on a right-padded batch and reduce it to per-sentence statistics."""
    base = envoy.gpt_neox
    n_layers = len(base.layers)
    with torch.inference_mode():
        with envoy.trace(input_ids=enc.input_ids, attention_mask=enc.attention_mask) as tracer:
            hidden = nnsight.save([])
            attn = nnsight.save([])
            hidden.append(base.embed_in.output)
            for i, layer in enumerate(base.layers):
                if hook is not None:
                    hook(envoy, i)
                attn.append(layer.attention.output[1])
                if i < n_layers - 1:
                    hidden.append(layer.output)
            hidden.append(base.final_layer_norm.output)
            tracer.stop()
    return reduce_batch(torch.stack(list(hidden)), torch.stack(list(attn)), enc)


def reduce_batch(hidden: torch.Tensor, attn: torch.Tensor, enc: Encoded) -> BatchOutput:
    """Reduce hidden states (L+1, n, T, d) and attention (L, n, H, T, T) to per-sentence statistics.

    Cue attention and entropy weight only target query rows, so those rows are taken out first (positions that
    are a target in no sentence of the batch contribute exact zeros) before any elementwise work."""
    tw = enc.target_mask.float()
    tw = tw / tw.sum(1, keepdim=True)  # (n, T): averaging weights over target tokens
    emb = (tw[None, :, None, :] @ hidden.float()).squeeze(2).transpose(0, 1)  # (n, L+1, d); einsum copies here
    attn = attn.float()
    rows = enc.target_mask.any(0)  # query positions that are a target somewhere in the batch
    at, wt = attn[:, :, :, rows], tw[:, rows]  # (L, n, H, Q, T), (n, Q)
    cue_attn = torch.einsum("lnhq,nq->nlh", (at * enc.cue_mask.float()[None, :, None, None, :]).sum(-1), wt)
    ent_q = -(at * torch.log(at.clamp(min=1e-30))).sum(-1)  # p = 0 gives 0 * log(1e-30) = 0
    entropy = torch.einsum("lnhq,nq->nlh", ent_q, wt)
    real = enc.attention_mask.bool()
    prev_mask = (real & ~enc.target_mask)[:, 1:].float()  # query positions 1..T-1 that are real, non-target
    diag = torch.diagonal(attn, offset=-1, dim1=-2, dim2=-1)  # (L, n, H, T-1): attn[q, q-1]
    prev_attn = torch.einsum("lnhq,nq->nlh", diag, prev_mask) / prev_mask.sum(1).clamp(min=1)[:, None, None]
    prev_attn[prev_mask.sum(1) == 0] = float("nan")
    return BatchOutput(emb, cue_attn, prev_attn, entropy)


def cosine_distances(emb: torch.Tensor, s1: np.ndarray, s2: np.ndarray) -> torch.Tensor:
    """1 - cosine similarity between sentence embeddings ``emb[s1]`` and ``emb[s2]`` at every layer."""
    a, b = emb[torch.tensor(s1)].double(), emb[torch.tensor(s2)].double()
    return 1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)


def measure(model: torch.nn.Module, tokenizer: object, stimuli: Stimuli, config: ExtractConfig = ExtractConfig(),
            hook: LayerHook | None = None, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Measure one loaded checkpoint on a stimulus set; returns tidy tables keyed by measurement name."""
    sents = stimuli.sentences
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc = encode(tokenizer, sents, pad_id=pad)
    envoy = nnsight.NNsight(model)
    device = next(model.parameters()).device
    order = torch.argsort(enc.lengths, stable=True)  # similar lengths together: less padding
    outs: list[BatchOutput] = []
    batches = list(torch.split(order, config.batch_size))
    for idx in tqdm(batches, desc="batches", leave=False, disable=not progress):
        outs.append(trace_batch(envoy, enc.rows(idx).to(device), hook).to("cpu"))
    inv = torch.argsort(order)
    full = BatchOutput(*(torch.cat([getattr(o, f) for o in outs])[inv] for f in BatchOutput.__dataclass_fields__))
    return tables(full, stimuli, config)


def tables(out: BatchOutput, stimuli: Stimuli, config: ExtractConfig) -> dict[str, pd.DataFrame]:
    """Long tidy tables from per-sentence tensors."""
    n, n_layers, n_heads = out.cue_attn.shape
    sid = stimuli.sentences["sentence_id"].to_numpy()
    heads = pd.DataFrame({
        "sentence_id": np.repeat(sid, n_layers * n_heads),
        "layer": np.tile(np.repeat(np.arange(n_layers), n_heads), n),
        "head": np.tile(np.arange(n_heads), n * n_layers),
        "cue_attn": out.cue_attn.reshape(-1).numpy(),
        "prev_attn": out.prev_attn.reshape(-1).numpy(),
        "entropy": out.entropy.reshape(-1).numpy(),
    })
    pairs = stimuli.pairs
    dist = cosine_distances(out.embeddings, pairs["s1"].to_numpy(), pairs["s2"].to_numpy())  # (P, L+1)
    n_pairs, n_h = dist.shape
    distances = pd.DataFrame({
        "pair_id": np.repeat(pairs["pair_id"].to_numpy(), n_h),
        "layer": np.tile(np.arange(n_h), n_pairs),
        "distance": dist.reshape(-1).numpy(),
    })
    result = {"distances": distances, "heads": heads}
    if config.save_embeddings:
        emb = out.embeddings.reshape(n * n_h, -1).numpy().astype(np.float32)
        result["embeddings"] = pd.DataFrame({
            "sentence_id": np.repeat(sid, n_h),
            "layer": np.tile(np.arange(n_h), n),
            "embedding": list(emb),
        })
    return result
