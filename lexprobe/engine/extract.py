"""The measurement engine: one batched nnsight trace per batch of sentences -> tidy tables.

Per sentence it reads the target word's hidden state at every layer (HF ``hidden_states`` convention: index 0 is
the embedding output, the last index is after the final layer norm), mean-pooled over the target's tokens, and
every layer x head's attention weights, from which it derives per head:

* ``cue_attn``: attention mass on the cue's tokens, averaged over the target's tokens;
* ``prev_attn``: the head's previous-token attention, averaged over the sentence's non-target positions (the
  control for head discovery: a previous-token head also "attends to an adjacent cue");
* ``entropy``: Shannon entropy (nats) of the head's attention row at the target, averaged over target tokens;
* ``control_attn`` (sets with a ``control`` column, see :mod:`lexprobe.stimuli.perturb`): attention mass on the
  position-matched control word, the word that now stands where the cue stood.

Per pair it gives the cosine distance between the two sentences' target embeddings at every layer. The forward
stops before the LM head (not needed here). An edit (:class:`lexprobe.engine.hooks.Edit`, e.g. an intervention)
changes the model inside the same trace (or its weights around it); module paths come from
:mod:`lexprobe.engine.sites`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, TypedDict, TypeVar

import numpy as np
import pandas as pd

from lexprobe.base.lazy import nnsight, torch
from lexprobe.base.progress import tqdm
from lexprobe.engine.batching import activation_bytes, split_rows
from lexprobe.engine.conditions import Donor
from lexprobe.engine.config import ExtractConfig
from lexprobe.engine.hooks import Batch, Edit, IntactLayers
from lexprobe.engine.sites import Sites, sites_of
from lexprobe.stimuli.align import Encoded, encoded
from lexprobe.stimuli.tables import Stimuli

if TYPE_CHECKING:  # the engine takes a loaded model and knows no suite: the types straight from transformers
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

REUSE_BYTES = 1 << 30  # at most this much memory for the intact layers an intervention reuses (else recompute)
R = TypeVar("R")


@dataclass
class BatchOutput:
    """Per-sentence tensors for one batch: embeddings (n, L+1, d); cue/prev attention and entropy (n, L, H)."""

    embeddings: torch.Tensor
    cue_attn: torch.Tensor
    prev_attn: torch.Tensor
    entropy: torch.Tensor
    control_attn: torch.Tensor | None = None  # attention to the position-matched control word (perturbed sets)

    def to(self, device: torch.device | str) -> BatchOutput:
        return replace(self, **{f: v.to(device) for f in BatchOutput.__dataclass_fields__
                                if (v := getattr(self, f)) is not None})


def trace_batch(sites: Sites, batch: Batch, intervention: Edit | None = None) -> BatchOutput:
    """Run one traced forward on a right-padded batch (editing it with ``intervention``) and reduce it. With the
    batch's intact layers at hand, layers below the intervention's first edited layer are skipped and their intact
    outputs and attention used (the same numbers: those layers compute exactly what the intact model does)."""
    enc, known, n = batch.enc, batch.intact, sites.n_layers
    start = 0 if intervention is None or known is None else intervention.first_layer(n)
    with torch.inference_mode():
        with sites.envoy.trace(input_ids=enc.input_ids, attention_mask=enc.attention_mask) as tracer:
            hidden = nnsight.save([])
            attn = nnsight.save([])
            if not start:
                hidden.append(sites.embed().output)
            for i in range(n):
                if i < start:
                    assert known is not None  # start > 0 only with intact layers
                    sites.layer(i).skip(known.outputs[i])
                    continue
                if intervention is not None:
                    intervention.edit(sites, i, batch)
                attn.append(sites.attention_weights(i))
                if i < n - 1:
                    hidden.append(sites.layer(i).output)
            hidden.append(sites.final_norm().output)
            tracer.stop()
    if known is not None and start:
        hidden, attn = [known.embed, *known.outputs[: min(start, n - 1)], *hidden], [*known.attention[:start], *attn]
    return reduce_batch(torch.stack(list(hidden)), torch.stack(list(attn)), enc)


def intact_layers(sites: Sites, batch: Batch) -> IntactLayers:
    """The intact model's embedding output, layer outputs and attention on one batch (call it outside weight
    edits)."""
    enc = batch.enc
    with torch.inference_mode():
        with sites.envoy.trace(input_ids=enc.input_ids, attention_mask=enc.attention_mask) as tracer:
            embed = nnsight.save(sites.embed().output)
            outputs, attn = nnsight.save([]), nnsight.save([])
            for i in range(sites.n_layers):
                attn.append(sites.attention_weights(i))
                outputs.append(sites.layer(i).output)
            tracer.stop()
    return IntactLayers(embed, list(outputs), list(attn))


Remembered: TypeAlias = "weakref.WeakKeyDictionary[torch.nn.Module, tuple[bytes, dict[Any, Any]]]"
_LAYERS: Remembered = weakref.WeakKeyDictionary()  # per live model: its intact layers, by batch
_INTACT: Remembered = weakref.WeakKeyDictionary()  # per live model: its intact head outputs, by layer


def remembered(cache: Remembered, model: torch.nn.Module, enc: Encoded) -> dict[Any, Any]:
    """What ``cache`` holds for ``model`` on exactly the sentences of ``enc`` (emptied when the sentences change):
    a sweep measures many interventions on one checkpoint's stimulus set, so intact passes are done once."""
    key = enc.input_ids.numpy().tobytes() + enc.attention_mask.numpy().tobytes()
    known_key, known = cache.get(model, (None, {}))
    if known_key != key:
        known = {}
        cache[model] = (key, known)
    return known


def intact_batch(sites: Sites, enc: Encoded, batch: Batch) -> IntactLayers:
    """:func:`intact_layers` of a batch of ``enc``, remembered for the most recent sentences of each live model."""
    known = remembered(_LAYERS, sites.model, enc)
    here = batch.rows.numpy().tobytes()
    if here not in known:
        known[here] = intact_layers(sites, batch)
    return known[here]


def reusable_layers(sites: Sites, enc: Encoded, batches: list[torch.Tensor]) -> bool:
    """Whether keeping every batch's intact layers stays under ``REUSE_BYTES`` (float32 hidden states and
    attention of all layers)."""
    return sum(activation_bytes(sites, len(idx), int(enc.lengths[idx].max())) for idx in batches) <= REUSE_BYTES


def intact_head_outputs(sites: Sites, enc: Encoded, batches: list[torch.Tensor],
                        layers: set[int]) -> dict[int, torch.Tensor]:
    """:func:`head_outputs`, remembered for the most recent sentences of each live model (a sweep measures many
    mean/resample ablations on one checkpoint). Call it only outside weight edits: the values are the intact ones."""
    known = remembered(_INTACT, sites.model, enc)
    missing = set(layers) - set(known)
    if missing:
        known.update(head_outputs(sites, enc, batches, missing))
    return {layer: known[layer] for layer in layers}


def head_outputs(sites: Sites, enc: Encoded, batches: list[torch.Tensor], layers: set[int]) -> dict[int, torch.Tensor]:
    """Intact concatenated head outputs (n, T, H*hd) of ``layers`` for every sentence (zeros at padding)."""
    n, width = enc.input_ids.shape
    out = {layer: torch.zeros(n, width, sites.n_heads * sites.head_dim) for layer in layers}
    for idx in batches:
        sub = enc.rows(idx).to(next(sites.model.parameters()).device)
        with torch.inference_mode():
            with sites.envoy.trace(input_ids=sub.input_ids, attention_mask=sub.attention_mask) as tracer:
                got = nnsight.save({layer: sites.head_output(layer).input for layer in sorted(layers)})
                tracer.stop()
        for layer, x in got.items():
            out[layer][idx, : x.shape[1]] = (x.float() * sub.attention_mask[..., None]).cpu()
    return out


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
    control = None
    if enc.control_mask is not None:  # perturbed sets: attention to the word standing where the cue stood
        control = torch.einsum("lnhq,nq->nlh", (at * enc.control_mask.float()[None, :, None, None, :]).sum(-1), wt)
    return BatchOutput(emb, cue_attn, prev_attn, entropy, control)


def cosine_distances(emb: torch.Tensor, s1: np.ndarray, s2: np.ndarray) -> torch.Tensor:
    """1 - cosine similarity (float64) between sentence embeddings ``emb[..., s1, :, :]`` and ``emb[..., s2, :, :]``
    at every layer; ``emb`` is (..., n, L+1, d). Each sentence is normalised once, not once per pair it is in: the
    same operations as ``torch.nn.functional.cosine_similarity`` (each vector divided by its norm clamped at 1e-8,
    then the product summed), so the same numbers to the bit (tested)."""
    unit = torch.nn.functional.normalize(emb.double(), dim=-1, eps=1e-8)
    a, b = torch.tensor(np.asarray(s1)), torch.tensor(np.asarray(s2))
    return 1 - (unit[..., a, :, :] * unit[..., b, :, :]).sum(-1)


def _replacements(sites: Sites, enc: Encoded, batches: list[torch.Tensor], intervention: Edit,
                  words: np.ndarray) -> dict[tuple[str, int], torch.Tensor]:
    """Replacement values of the intervention's mean/resample ablations, from intact passes over the set."""
    intervention.validate(sites.n_layers, sites.n_heads)
    values = {}
    for leaf in intervention.leaves():
        layers = leaf.value_layers(sites.n_layers, sites.n_heads)
        if layers:
            for layer, x in intact_head_outputs(sites, enc, batches, layers).items():
                values[(leaf.key, layer)] = leaf.replacement(layer, x, enc.lengths, words)
    return values


def _traced(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sentences: pd.DataFrame,
            batch_size: int | None, intervention: Edit | None, donor: Donor | None, read: Callable[[Sites, Batch], R],
            progress: bool, reuse: bool = False) -> tuple[Encoded, list[torch.Tensor], list[R]]:
    """Encode, prepare and trace every batch (sorted by length; :func:`split_rows`), calling ``read(sites, batch)``
    inside each trace; returns the encoding, each batch's sentence rows and the per-batch results. ``reuse``: give
    each batch its intact layers (:func:`intact_batch`) when the intervention leaves its first layers alone and they
    fit in memory."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc = encoded(tokenizer, sentences, pad_id=pad)
    sites = sites_of(model)
    device = next(model.parameters()).device
    order = torch.argsort(enc.lengths, stable=True)  # similar lengths together: less padding
    batches = split_rows(sites, order, enc.lengths, batch_size)
    values = {} if intervention is None else _replacements(sites, enc, batches, intervention,
                                                           sentences["word"].to_numpy())
    todo = [Batch(enc.rows(idx).to(device), idx, {k: v[idx].to(device) for k, v in values.items()})
            for idx in batches]
    if reuse and intervention is not None and intervention.first_layer(sites.n_layers) > 0 \
            and reusable_layers(sites, enc, batches):
        for batch in todo:  # before any weight edit: these are the intact layers
            batch.intact = intact_batch(sites, enc, batch)
    outs = []
    with intervention.weights(sites, donor) if intervention is not None else nullcontext():
        for batch in tqdm(todo, desc="batches", leave=False, disable=not progress):
            outs.append(read(sites, batch))
    return enc, batches, outs


def measure(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stimuli: Stimuli,
            config: ExtractConfig = ExtractConfig(),
            intervention: Edit | None = None, donor: Donor | None = None,
            progress: bool = True) -> dict[str, pd.DataFrame]:
    """Measure one loaded checkpoint on a stimulus set, optionally under an intervention; returns tidy tables.

    ``donor`` holds another checkpoint's QKV weights for interventions that copy them
    (:meth:`lexprobe.engine.sites.Sites.qk_weights`). Every site is checked live once per model
    (:func:`lexprobe.engine.sites.sites_of`).
    """
    _, batches, outs = _traced(model, tokenizer, stimuli.sentences, config.batch_size, intervention, donor,
                               lambda sites, batch: trace_batch(sites, batch, intervention).to("cpu"), progress,
                               reuse=True)
    inv = torch.argsort(torch.cat(batches))
    full = replace(outs[0], **{f: torch.cat([getattr(o, f) for o in outs])[inv]
                               for f in BatchOutput.__dataclass_fields__ if getattr(outs[0], f) is not None})
    return tables(full, stimuli, config)


class AttentionMap(TypedDict):
    """One sentence's attention as the model used it: tokens, target and cue token indices, (L, H, T, T)."""

    tokens: list[str]
    target: list[int]
    cue: list[int]
    attention: torch.Tensor


def attention_maps(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sentences: pd.DataFrame,
                   intervention: Edit | None = None, donor: Donor | None = None) -> list[AttentionMap]:
    """Per sentence (in table order): its tokens, target and cue token indices, and the attention (L, H, T, T)
    the model used, under ``intervention`` (mean/resample values come from these sentences)."""

    def read(sites: Sites, batch: Batch) -> torch.Tensor:
        enc = batch.enc
        with torch.inference_mode():
            with sites.envoy.trace(input_ids=enc.input_ids, attention_mask=enc.attention_mask) as tracer:
                attn = nnsight.save([])
                for i in range(sites.n_layers):
                    if intervention is not None:
                        intervention.edit(sites, i, batch)
                    attn.append(sites.attention_weights(i))
                tracer.stop()
        return torch.stack(list(attn), 1).float()  # (b, L, H, T, T)

    enc, batches, outs = _traced(model, tokenizer, sentences, None, intervention, donor, read, progress=False)
    maps: dict[int, AttentionMap] = {}
    for idx, att in zip(batches, outs):
        for j, i in enumerate(idx.tolist()):
            n = int(enc.lengths[i])
            maps[i] = {"tokens": enc.tokens[i], "target": enc.target_mask[i, :n].nonzero()[:, 0].tolist(),
                       "cue": enc.cue_mask[i, :n].nonzero()[:, 0].tolist(), "attention": att[j, :, :, :n, :n]}
    return [maps[i] for i in range(len(maps))]


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
    if out.control_attn is not None:
        heads["control_attn"] = out.control_attn.reshape(-1).numpy()
    pairs = stimuli.pairs
    dist = cosine_distances(out.embeddings, pairs["s1"].to_numpy(), pairs["s2"].to_numpy())  # (P, L+1)
    n_pairs, n_h = dist.shape
    distances = pd.DataFrame({
        "pair_id": np.repeat(pairs["pair_id"].to_numpy(), n_h),
        "layer": np.tile(np.arange(n_h), n_pairs),
        "distance": dist.reshape(-1).numpy(),
    })
    result = {"distances": distances, "heads": heads} if config.save_heads else {"distances": distances}
    if config.save_embeddings:
        emb = out.embeddings.reshape(n * n_h, -1).numpy().astype(np.float32)
        result["embeddings"] = pd.DataFrame({
            "sentence_id": np.repeat(sid, n_h),
            "layer": np.tile(np.arange(n_h), n),
            "embedding": list(emb),
        })
    return result


@dataclass(frozen=True)
class Intact:
    """The intact model: stored as condition ``intact``."""

    kind: ClassVar[str] = "intact"
    condition: ClassVar[str] = "intact"
    donor_step: ClassVar[int | None] = None

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def donor_layers(self, n_layers: int) -> set[int]:
        return set()

    def measurements(self, config: ExtractConfig) -> tuple[str, ...]:
        return config.measurements

    def measure(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stimuli: Stimuli,
                config: ExtractConfig, donor: Donor | None, progress: bool) -> dict[str, pd.DataFrame]:
        return measure(model, tokenizer, stimuli, config, None, None, progress)

    def cost(self, n_layers: int, n_heads: int) -> float:
        return 1.0


INTACT = Intact()
