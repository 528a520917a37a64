"""Activation patching at the target's tokens: noising (necessity) and denoising (sufficiency), prefix-cached.

Every sentence of a stimulus set is paired with a **counterfactual**: the same sentence with its cue replaced
(by default the ``neutral`` perturbation of :mod:`lexprobe.stimuli.perturb`: a sense-neutral modifier in the cue's
place).
A counterfactual set is any stimulus set whose sentence table has ``source_id`` (the real sentence's id), as every
perturbed set has. The target's tokens are matched by role, the k-th target token of one sentence with the k-th of
the other, so a cue of another token length still pairs; a sentence without a counterfactual, or whose target is
tokenized differently there, is dropped with one counted :class:`PatchWarning` (not in the store's conditions:
there stage 4 counts what its tables hold and warns once).

A :class:`Patch` names heads (``(layer, head)`` pairs; ``None``: every head of every layer) and a direction:

* ``noise``: run the real sentences and replace the heads' outputs (the input of ``attention.dense``) at the
  target's tokens by their outputs on the counterfactual (is the head *necessary*?);
* ``denoise``: run the counterfactuals and restore the heads' outputs at the target's tokens from the real
  sentence (is the head *sufficient*?).

``noise`` of no head is the clean run and ``denoise`` of no head the counterfactual run. The target's residual state
is its token embedding plus what every attention and MLP block wrote at its own positions, so denoising every head
reproduces the clean run and noising every head the counterfactual run (the exactness controls). Tokens before the
target never see a patch there and tokens after it never reach it, so :class:`PatchRunner` runs each sentence's
prefix once (the model's key/value cache) and every patch on the target's tokens only, several patches per forward.
Where positions are learned and absolute (GPT-2), hidden state 0 carries the position too: there the counterfactual
sentence runs with its positions moved so that its target sits at the real target's positions (a counterfactual
whose prefix is longer than the real one cannot, and is dropped with a count).
:class:`PatchMap` is the store's condition: all patches of one checkpoint in one unit, whose distances table has a
``patch`` column (the patch's :attr:`Patch.name`).
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd

from lexprobe.base.heads import Head
from lexprobe.base.lazy import nnsight, torch
from lexprobe.engine.batching import split_rows
from lexprobe.engine.conditions import Donor, Named
from lexprobe.engine.extract import cosine_distances
from lexprobe.engine.interventions import all_heads, heads_of
from lexprobe.engine.sites import Sites, attention_flags, sites_of
from lexprobe.stimuli.align import Encoded, encode
from lexprobe.stimuli.tables import Stimuli

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lexprobe.engine.extract import ExtractConfig

Direction = Literal["noise", "denoise"]
DIRECTIONS: tuple[Direction, ...] = ("noise", "denoise")
PATCH_PREP, PATCH_RUN = 2.3, 0.11  # intact passes: a map's preparation, one patched run (benchmarks/patch_cost.py)
ROW_BUDGET = 2**26  # most attention scores (batch x heads x queries x keys) one patched forward may hold


class PatchWarning(UserWarning):
    """Sentences left out of patching (no counterfactual, or a target tokenized differently there)."""


@dataclass(frozen=True)
class Patch:
    """One patch at the target's tokens: the heads it replaces and the direction (see the module docstring)."""

    heads: tuple[Head, ...] | None = ()
    direction: Direction = "noise"

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", heads_of(self.heads))
        if self.direction not in DIRECTIONS:
            raise ValueError(f"patch direction {self.direction!r}: choose noise or denoise")

    @property
    def name(self) -> str:
        """``noise-none``, ``denoise-all``, ``noise-l2h0`` or ``denoise-l0h1+l2h3`` (unique within a map)."""
        if self.heads is None:
            what = "all"
        elif not self.heads:
            what = "none"
        else:
            what = "+".join(f"l{l}h{h}" for l, h in self.heads)
        return f"{self.direction}-{what}"

    def spec(self) -> dict[str, Any]:
        return {"heads": None if self.heads is None else [list(h) for h in self.heads], "direction": self.direction}


def layer_heads(layer: int, n_heads: int) -> tuple[Head, ...]:
    """Every head of one layer."""
    return tuple((layer, h) for h in range(n_heads))


@dataclass(frozen=True)
class PatchMap(Named):
    """Every patch of one checkpoint against one counterfactual set, measured and stored as one condition (a sibling
    of the interventions: it runs its own prefix-cached forwards, not an edit of the engine's trace)."""

    kind: ClassVar[str] = "patchmap"
    counterfactual: Stimuli = field(compare=False, repr=False)
    patches: tuple[Patch, ...] = ()
    counterfactual_hash: str = field(init=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "counterfactual_hash", self.counterfactual.hash)
        names = [p.name for p in self.patches]
        if len(set(names)) != len(names):
            raise ValueError(f"patch map: patches repeat ({sorted(n for n in names if names.count(n) > 1)})")
        if "source_id" not in self.counterfactual.sentences.columns:
            raise ValueError(f"counterfactual set {self.counterfactual.name!r} has no source_id column: make it with "
                             "lexprobe.stimuli.perturb (e.g. perturb.neutral) or give each sentence the id of its "
                             "real one")

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "counterfactual": {"name": self.counterfactual.name,
                                                      "hash": self.counterfactual.hash},
                "patches": [p.spec() for p in self.patches]}

    def label(self) -> str:
        return f"{len(self.patches)}p"

    def validate(self, n_layers: int, n_heads: int) -> None:
        bad = sorted({h for p in self.patches for h in (p.heads or ()) if h[0] >= n_layers or h[1] >= n_heads})
        if bad:
            raise ValueError(f"{self.condition}: heads {bad} do not exist in a model with {n_layers} layers x "
                             f"{n_heads} heads")

    def measure(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stimuli: Stimuli,
                config: ExtractConfig, donor: Donor | None, progress: bool) -> dict[str, pd.DataFrame]:
        """The store's tables of the map on one loaded checkpoint (:func:`measure_patch_map`)."""
        return measure_patch_map(model, tokenizer, stimuli, self, config.batch_size, config.save_heads)

    def cost(self, n_layers: int, n_heads: int) -> float:
        """Intact forward passes per sentence: the preparation and one patched run per patch."""
        return PATCH_PREP + PATCH_RUN * len(self.patches)


DISTANCE_BYTES = 1e9  # memory for the embeddings of the patches whose distances are computed together


def counterfactual_pairs(stimuli: Stimuli, counterfactual: Stimuli) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Sentence rows of ``stimuli`` that have a counterfactual, the matching rows of ``counterfactual``, and why
    each other real sentence (by id) has none. A real sentence claimed by several counterfactual sentences (a
    ``source_id`` repeated) is refused: which one to patch from is not defined."""
    cf = counterfactual.sentences
    rows_of: dict[int, list[int]] = {}
    for i, s in enumerate(cf["source_id"]):
        rows_of.setdefault(int(s), []).append(i)
    real_ids = {int(s) for s in stimuli.sentences["sentence_id"]}
    repeats = [(s, rows) for s, rows in rows_of.items() if len(rows) > 1 and s in real_ids]
    if repeats:
        listing = "; ".join(f"source_id {s} at rows {rows}" for s, rows in repeats[:5])
        more = f" (and {len(repeats) - 5} more)" if len(repeats) > 5 else ""
        raise ValueError(f"counterfactual set {counterfactual.name!r}: source_id repeats, {len(repeats)} real "
                         f"sentences of {stimuli.name!r} claimed by more than one counterfactual sentence (rows of "
                         f"its sentence table): {listing}{more}; give each real sentence one counterfactual")
    row_of = {s: rows[0] for s, rows in rows_of.items()}
    real_rows, cf_rows, missing = [], [], {}
    for i, sid in enumerate(stimuli.sentences["sentence_id"]):
        if int(sid) in row_of:
            real_rows.append(i)
            cf_rows.append(row_of[int(sid)])
        else:
            missing[int(sid)] = f"no counterfactual in {counterfactual.name!r}"
    return np.array(real_rows, dtype=int), np.array(cf_rows, dtype=int), missing


def _target_ids(enc: Encoded) -> list[tuple[int, ...]]:
    return [tuple(int(t) for t in ids[m]) for ids, m in zip(enc.input_ids, enc.target_mask)]


@dataclass
class _Side:
    """One side (real or counterfactual sentences) of one batch, prefix computed: what a patched forward needs."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, the prefix's keys and values (b, H, P, hd)
    prefix_mask: torch.Tensor  # (b, P)
    target_ids: torch.Tensor  # (b, Tt) the target's tokens, right-padded
    target_mask: torch.Tensor  # (b, Tt)
    positions: torch.Tensor  # (b, Tt) their positions in the sentence
    heads: list[torch.Tensor] = field(default_factory=list)  # per layer, intact head outputs at the target (b, Tt, .)
    embeddings: torch.Tensor | None = None  # (b, L+1, d) intact


def _split(enc: Encoded) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prefix ids and mask (everything before the target), target ids, mask and positions, right-padded."""
    start = enc.target_mask.float().argmax(1)
    n_target = enc.target_mask.sum(1)
    width_p, width_t = int(start.max()), int(n_target.max())
    ar_p, ar_t = (torch.arange(w, device=enc.input_ids.device)[None] for w in (width_p, width_t))
    prefix_mask = (ar_p < start[:, None]).long()
    prefix_ids = enc.input_ids[:, :width_p] * prefix_mask
    positions = start[:, None] + ar_t
    target_mask = (ar_t < n_target[:, None]).long()
    gather = positions.clamp(max=enc.input_ids.shape[1] - 1)
    target_ids = torch.gather(enc.input_ids, 1, gather) * target_mask
    return prefix_ids, prefix_mask, target_ids, target_mask, positions


class PatchRunner:
    """A loaded checkpoint prepared for patched runs on a stimulus set and its counterfactual (see the module
    docstring): prefixes computed once per side and batch, intact head outputs and embeddings at the target kept;
    ``warn``: list the sentences dropped in a :class:`PatchWarning`."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stimuli: Stimuli,
                 counterfactual: Stimuli, batch_size: int | None = None, warn: bool = True):
        self.sites = sites_of(model)
        self.stimuli, self.counterfactual = stimuli, counterfactual
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        real_rows, cf_rows, dropped = counterfactual_pairs(stimuli, counterfactual)
        if not len(real_rows):
            raise ValueError(f"patching {stimuli.name!r} against {counterfactual.name!r}: no sentence has a "
                             "counterfactual (its source_id values name none of the set's sentence_id values)")
        real = encode(tokenizer, stimuli.sentences.iloc[real_rows], pad_id=pad)
        cf = encode(tokenizer, counterfactual.sentences.iloc[cf_rows], pad_id=pad)
        same = np.array([a == b for a, b in zip(_target_ids(real), _target_ids(cf))], dtype=bool)
        sids = stimuli.sentences["sentence_id"].to_numpy()
        dropped.update({int(sids[r]): "target tokenized differently in the counterfactual"
                        for r in real_rows[~same]})
        shift = torch.zeros(len(real_rows), dtype=torch.long)
        if self.sites.map.absolute_positions:  # hidden state 0 carries the position: the targets must share theirs
            shift = real.target_mask.float().argmax(1).long() - cf.target_mask.float().argmax(1).long()
            longer = same & (shift < 0).numpy()
            dropped.update({int(sids[r]): "counterfactual prefix longer than the real one (learned absolute "
                            "positions: its target cannot sit at the real target's positions)"
                            for r in real_rows[longer]})
            same &= ~longer
        keep = torch.from_numpy(np.flatnonzero(same))
        self.rows = real_rows[same]  # rows of stimuli.sentences measured, in this runner's order
        self.sentence_ids = sids[self.rows]
        self.pairs = self._pairs(stimuli, set(self.sentence_ids.tolist()), dropped, warn)
        if not len(keep):
            raise ValueError(f"patching {stimuli.name!r} against {counterfactual.name!r}: no sentence can be patched "
                             f"({len(dropped)} dropped)")
        real, cf = real.rows(keep), cf.rows(keep)
        order = torch.argsort(real.target_mask.float().argmax(1), stable=True)
        self.batches = split_rows(self.sites, order, real.lengths, batch_size)
        self.device = next(model.parameters()).device
        shift = shift[keep]
        self.sides = {name: [self._prepare(enc.rows(idx).to(self.device), (shift[idx] * moves).to(self.device))
                             for idx in self.batches]
                      for name, enc, moves in (("real", real, 0), ("cf", cf, 1))}

    @staticmethod
    def _pairs(stimuli: Stimuli, kept: set[int], dropped: dict[int, str], warn: bool) -> pd.DataFrame:
        pairs = stimuli.pairs
        ok = pairs["s1"].isin(kept) & pairs["s2"].isin(kept)
        if dropped and warn:
            listing = "; ".join(f"sentence_id {s}: {why}" for s, why in sorted(dropped.items())[:5])
            more = f" (and {len(dropped) - 5} more)" if len(dropped) > 5 else ""
            warnings.warn(f"patching {stimuli.name!r}: dropped {len(dropped)} of {len(stimuli.sentences)} sentences "
                          f"and {int((~ok).sum())} of {len(pairs)} pairs with them: {listing}{more}",
                          PatchWarning, stacklevel=3)
        return pairs[ok].reset_index(drop=True)

    def _prepare(self, enc: Encoded, shift: torch.Tensor) -> _Side:
        """One side of a batch, each sentence at positions moved by ``shift`` (b,) (learned absolute positions: the
        counterfactual's target then sits at the real target's positions; 0 elsewhere)."""
        prefix_ids, prefix_mask, target_ids, target_mask, positions = _split(enc)
        moved = {}
        if self.sites.map.absolute_positions:
            moved = {"position_ids": torch.arange(prefix_ids.shape[1], device=shift.device)[None] + shift[:, None]}
            positions = positions + shift[:, None]
        with torch.inference_mode(), attention_flags(self.sites.model):
            out = self.sites.model.base_model(input_ids=prefix_ids, attention_mask=prefix_mask, use_cache=True,
                                              **moved)
        kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        side = _Side(kv, prefix_mask, target_ids, target_mask, positions)
        emb, heads = self._forward(side, [Patch()], None)
        side.embeddings, side.heads = emb[:, 0], heads
        return side

    def _forward(self, side: _Side, patches: list[Patch], src: list[torch.Tensor] | None
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One forward of ``k = len(patches)`` copies of a batch's target tokens laid side by side along the
        sequence, on the batch's cached prefix: each copy attends to the prefix and to its own earlier tokens only
        (a 4-D mask), so the prefix's keys and values are shared by every copy, never repeated. Copy j gets patch j
        (heads' outputs at its tokens replaced by ``src``, the other side's intact outputs). Returns embeddings
        (b, k, L+1, d) and, for a single copy without a patch, the head outputs per layer (b, Tt, H*hd)."""
        from transformers import DynamicCache

        sites = self.sites
        k = len(patches)
        b, tt = side.target_ids.shape
        cache = DynamicCache(ddp_cache_data=side.kv)
        dtype = side.kv[0][0].dtype
        own = torch.block_diag(*[torch.tril(torch.ones(tt, tt, dtype=torch.bool))] * k).to(self.device)  # (kTt, kTt)
        keys = torch.cat([side.prefix_mask.bool()[:, None, :].expand(b, k * tt, -1),
                          own[None] & side.target_mask.bool().repeat(1, k)[:, None, :]], 2)  # (b, kTt, P + kTt)
        mask = torch.zeros(keys.shape, dtype=dtype, device=self.device).masked_fill(~keys, torch.finfo(dtype).min)
        edits = self._edits(patches, tt) if src is not None else None
        tw = side.target_mask.float()
        tw = (tw / tw.sum(1, keepdim=True))[:, None, :, None]  # (b, 1, Tt, 1)

        def pooled(h: torch.Tensor) -> torch.Tensor:
            return (h.float().reshape(b, k, tt, -1) * tw).sum(2)  # (b, k, d): mean over each copy's target tokens

        with torch.inference_mode():
            with sites.envoy.trace(input_ids=side.target_ids.repeat(1, k), attention_mask=mask[:, None],
                                   position_ids=side.positions.repeat(1, k), past_key_values=cache,
                                   use_cache=True) as tracer:
                hidden = nnsight.save([pooled(sites.embed().output)])
                heads = nnsight.save([])
                for i in range(sites.n_layers):
                    x = sites.head_output(i).input
                    cols = edits[i] if edits is not None else None
                    if cols is not None and src is not None:
                        x[:] = torch.where(cols, src[i].repeat(1, k, 1), x)
                    elif edits is None:
                        heads.append(x.clone())
                    if i < sites.n_layers - 1:
                        hidden.append(pooled(sites.layer(i).output))
                hidden.append(pooled(sites.final_norm().output))
                tracer.stop()
        return torch.stack(list(hidden), 2), list(heads)

    def _edits(self, patches: list[Patch], tt: int) -> list[torch.Tensor | None]:
        """Per layer, the (1, k*Tt, H*hd) mask of the head-output columns each copy's patch replaces (None: none)."""
        sites = self.sites
        hd, width = sites.head_dim, sites.n_heads * sites.head_dim
        out: list[torch.Tensor | None] = []
        for layer in range(sites.n_layers):
            mask = torch.zeros(len(patches), width, dtype=torch.bool, device=self.device)
            for j, p in enumerate(patches):
                for h in all_heads(p.heads, sites.n_layers, sites.n_heads).get(layer, []) if p.heads != () else []:
                    mask[j, h * hd:(h + 1) * hd] = True
            out.append(mask.repeat_interleave(tt, 0)[None] if mask.any() else None)
        return out

    def group_size(self, side: _Side) -> int:
        """How many patches one forward lays side by side, by the size of its attention scores."""
        b, tt = side.target_ids.shape
        p = side.prefix_mask.shape[1]
        k = 1
        while (k + 1) * tt * (p + (k + 1) * tt) * b * self.sites.n_heads <= ROW_BUDGET and k < 256:
            k += 1
        return k

    def embeddings(self, patches: list[Patch]) -> dict[str, torch.Tensor]:
        """Target embeddings (n, L+1, d) of the measured sentences (this runner's order) under each patch, by
        :attr:`Patch.name`: a patch listed twice is refused (its batches would be kept twice, in scrambled rows)."""
        repeated = [name for name, n in Counter(p.name for p in patches).items() if n > 1]
        if repeated:
            raise ValueError(f"patches listed more than once in one call: {', '.join(repeated)}; list each patch once "
                             "(results are kept by patch name)")
        out: dict[str, list[torch.Tensor]] = {p.name: [] for p in patches}
        for direction, run, source in (("noise", "real", "cf"), ("denoise", "cf", "real")):
            todo = [p for p in patches if p.direction == direction]
            for bi, side in enumerate(self.sides[run]):
                for p in (p for p in todo if p.heads == ()):
                    assert side.embeddings is not None  # set by _prepare
                    out[p.name].append(side.embeddings)
                rest = [p for p in todo if p.heads != ()]
                size = self.group_size(side)
                for g in range(0, len(rest), size):
                    group = rest[g:g + size]
                    emb, _ = self._forward(side, group, self.sides[source][bi].heads)
                    for j, p in enumerate(group):
                        out[p.name].append(emb[:, j])
        inv = torch.argsort(torch.cat(self.batches))
        return {name: torch.cat(parts)[inv].cpu() for name, parts in out.items()}

    def distances(self, patches: list[Patch]) -> pd.DataFrame:
        """Pair distances (1 - cosine, float64) at every layer under each patch: columns patch, pair_id, layer,
        distance."""
        row = {int(s): i for i, s in enumerate(self.sentence_ids)}
        s1, s2 = (self.pairs[s].map(row).to_numpy() for s in ("s1", "s2"))
        # a few patches at a time: every patch's embeddings at once is patches x sentences x layers x width (on the
        # pythia-410m shape, 820 patches: 16 GB, and several times that in float64)
        per_patch = len(self.sentence_ids) * (self.sites.n_layers + 1) * int(self.sites.model.config.hidden_size) * 24
        chunk = max(1, int(DISTANCE_BYTES // per_patch))
        frames = []
        for start in range(0, len(patches), chunk):
            emb = self.embeddings(patches[start:start + chunk])
            dist = cosine_distances(torch.stack(list(emb.values())), s1, s2)  # (k, pairs, L+1)
            k, n_pairs, n_layers = dist.shape
            frames.append(pd.DataFrame({
                "patch": np.repeat(list(emb), n_pairs * n_layers),
                "pair_id": np.tile(np.repeat(self.pairs["pair_id"].to_numpy(), n_layers), k),
                "layer": np.tile(np.arange(n_layers), k * n_pairs), "distance": dist.reshape(-1).numpy()}))
        return pd.concat(frames, ignore_index=True)


def measure_patch_map(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stimuli: Stimuli,
                      patch_map: PatchMap, batch_size: int | None = None, save_heads: bool = False
                      ) -> dict[str, pd.DataFrame]:
    """The store's tables of a patch map on one loaded checkpoint: distances with a ``patch`` column (and, when the
    sweep keeps heads tables, an empty one: patched runs read no attention). Dropped sentences are not warned about
    here, once per checkpoint and worker: their pairs are missing from the table, which stage 4 counts."""
    runner = PatchRunner(model, tokenizer, stimuli, patch_map.counterfactual, batch_size, warn=False)
    sites: Sites = runner.sites
    patch_map.validate(sites.n_layers, sites.n_heads)
    out = {"distances": runner.distances(list(patch_map.patches))}
    if save_heads:
        out["heads"] = pd.DataFrame({c: pd.Series(dtype=t) for c, t in (("sentence_id", "int64"), ("layer", "int64"),
                                                                         ("head", "int64"), ("cue_attn", "float32"))})
    return out
