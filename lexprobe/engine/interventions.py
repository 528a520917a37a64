"""Interventions as frozen specs that the engine applies inside its own batched trace.

Every intervention is a frozen dataclass. Its ``condition`` (the results store's path segment) and its fingerprint
are derived from its fields, so two different interventions can never share cached results and no free-form name
decides what is reused. Kinds:

* :class:`HeadAblation`: replace heads' outputs at the input of the attention output projection (viewed as
  (batch, seq, heads, head_dim)) by ``zero``, their ``mean`` over every real token of the stimulus set at that
  checkpoint, or a ``resample``: the same head's output in another sentence (seeded; a donor of another word and at
  least the same length when one exists, else the longest other sentence with its last token repeated).
* :class:`EdgeKnockout`: remove attention edges from the target's tokens to the cue's tokens (``edges="cue"``), or
  to as many randomly chosen earlier non-cue tokens per sentence (``edges="random"``, the positive control), in
  chosen heads; ``mode="pre"`` masks the scores before the softmax (the head's remaining attention renormalises),
  ``mode="post"`` zeroes the probabilities after it.
* :class:`QKEdit`: a head's Q and K weights and biases (where the site table says they are) zeroed, or copied from
  another checkpoint of the same model and seed (``method="copy", source_step=1``), as in the original study.
  Applied by :meth:`Intervention.weights`, a context that always restores the weights. Where a per-head edit
  cannot be exact it is refused (:func:`lexprobe.engine.sites.qk_refusal`); with grouped-query attention ``zero``
  zeroes the head's queries alone (zero scores, the other heads of its key group untouched).
* :class:`Compose`: several at once; :class:`NoOp`: changes nothing (its results must equal the intact ones).

Heads are ``(layer, head)`` pairs; ``heads=None`` means every head of every layer.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, SupportsInt, cast

import numpy as np

from lexprobe.base.heads import Head
from lexprobe.base.lazy import torch
from lexprobe.engine.conditions import Donor
from lexprobe.engine.extract import ExtractConfig, measure
from lexprobe.engine.hooks import Batch, Edit, Encoded
from lexprobe.engine.sites import Refused, Sites, qk_refusal

if TYPE_CHECKING:
    import pandas as pd
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lexprobe.stimuli.tables import Stimuli


def heads_of(heads: Iterable[Iterable[SupportsInt]] | None) -> tuple[Head, ...] | None:
    """Normalise a head collection to a sorted tuple of unique (layer, head) int pairs (None stays None)."""
    if heads is None:
        return None
    out = set()
    for h in heads:
        layer, head = (int(v) for v in h)
        if layer < 0 or head < 0:
            raise ValueError(f"head {h!r}: layer and head must be >= 0")
        out.add((layer, head))
    return tuple(sorted(out))


def heads_label(heads: tuple[Head, ...] | None) -> str:
    """Short readable name of a head set (``all``, ``l2h0``, ``3h``)."""
    if heads is None:
        return "all"
    if len(heads) == 1:
        return f"l{heads[0][0]}h{heads[0][1]}"
    return f"{len(heads)}h"


@dataclass(frozen=True)
class Intervention(Edit):
    """Base class of the interventions: edits (:class:`~lexprobe.engine.hooks.Edit`) that the sweep measures as
    conditions, by :func:`lexprobe.engine.extract.measure`."""

    kind: ClassVar[str] = "intervention"

    def measure(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stimuli: Stimuli,
                config: ExtractConfig, donor: Donor | None, progress: bool) -> dict[str, pd.DataFrame]:
        """The store's tables of one loaded checkpoint under this intervention."""
        return measure(model, tokenizer, stimuli, config, self, donor, progress)

    def cost(self, n_layers: int, n_heads: int) -> float:
        """Intact forward passes per sentence: the share of layers from :meth:`first_layer` on (the engine reuses
        the intact layers below it)."""
        return max(n_layers - self.first_layer(n_layers), 1) / n_layers


def first_of(heads: tuple[Head, ...] | None, n_layers: int) -> int:
    """The lowest layer of a head set (``None``: every head, layer 0; no head: ``n_layers``)."""
    return 0 if heads is None else min((layer for layer, _ in heads), default=n_layers)


def all_heads(heads: tuple[Head, ...] | None, n_layers: int, n_heads: int) -> dict[int, list[int]]:
    """Heads grouped by layer (``None``: every head of every layer)."""
    pairs = heads if heads is not None else [(l, h) for l in range(n_layers) for h in range(n_heads)]
    out: dict[int, list[int]] = {}
    for layer, head in pairs:
        out.setdefault(layer, []).append(head)
    return out


@dataclass(frozen=True)
class NoOp(Intervention):
    """Changes nothing; runs the intervention path of the engine (its tables must equal the intact ones)."""

    kind: ClassVar[str] = "noop"  # first layer 0 (the default): the control runs every layer of the edit path


@dataclass(frozen=True)
class HeadAblation(Intervention):
    """Replace heads' outputs (input of the attention output projection) by zero, their mean, or a resample."""

    kind: ClassVar[str] = "ablate"
    heads: tuple[Head, ...] | None = ()
    method: Literal["zero", "mean", "resample"] = "zero"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", heads_of(self.heads))
        if self.method not in ("zero", "mean", "resample"):
            raise ValueError(f"ablation method {self.method!r}: choose zero, mean or resample")

    def label(self) -> str:
        return f"{self.method}-{heads_label(self.heads)}"

    def head_set(self) -> tuple[Head, ...] | None:
        return self.heads

    def value_layers(self, n_layers: int, n_heads: int) -> set[int]:
        return set() if self.method == "zero" else set(all_heads(self.heads, n_layers, n_heads))

    def first_layer(self, n_layers: int) -> int:
        return first_of(self.heads, n_layers)

    def donors(self, lengths: np.ndarray, words: np.ndarray) -> np.ndarray:
        """Seeded donor sentence per sentence: another word's sentence at least as long, else the longest other."""
        rng = np.random.default_rng(self.seed)
        n = len(lengths)
        out = np.empty(n, dtype=int)
        for i in range(n):
            ok = np.flatnonzero((lengths >= lengths[i]) & (words != words[i]))
            if len(ok) == 0:
                others = np.flatnonzero(np.arange(n) != i)
                ok = others[lengths[others] == lengths[others].max()] if len(others) else np.array([i])
            out[i] = rng.choice(ok)
        return out

    def replacement(self, layer: int, outputs: torch.Tensor, lengths: torch.Tensor,
                    words: np.ndarray) -> torch.Tensor:
        n, width, _ = outputs.shape
        real = (torch.arange(width)[None, :] < lengths[:, None]).to(outputs.dtype)
        if self.method == "mean":
            mean = (outputs * real[..., None]).sum((0, 1)) / real.sum()
            return mean.expand(n, width, -1)
        donor = torch.as_tensor(self.donors(lengths.numpy(), words))
        pos = torch.minimum(torch.arange(width)[None, :], (lengths[donor] - 1)[:, None])  # (n, T)
        return outputs[donor[:, None], pos]

    def edit(self, sites: Sites, layer: int, batch: Batch) -> None:
        heads = all_heads(self.heads, sites.n_layers, sites.n_heads).get(layer)
        if not heads:
            return
        x = sites.head_output(layer).input
        hd = sites.head_dim
        for h in heads:
            cols = slice(h * hd, (h + 1) * hd)
            if self.method == "zero":
                x[:, :, cols] = 0
            else:
                x[:, :, cols] = batch.head_values[(self.key, layer)][:, : x.shape[1], cols]


@dataclass(frozen=True)
class EdgeKnockout(Intervention):
    """Cut attention edges from the target's tokens to the cue's tokens (or to random earlier non-cue tokens)."""

    kind: ClassVar[str] = "knockout"
    heads: tuple[Head, ...] | None = None
    edges: Literal["cue", "random"] = "cue"
    mode: Literal["pre", "post"] = "pre"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", heads_of(self.heads))
        if self.edges not in ("cue", "random"):
            raise ValueError(f"knockout edges {self.edges!r}: choose cue or random")
        if self.mode not in ("pre", "post"):
            raise ValueError(f"knockout mode {self.mode!r}: choose pre (mask scores) or post (zero probabilities)")

    def label(self) -> str:
        return f"{self.edges}-{self.mode}-{heads_label(self.heads)}"

    def head_set(self) -> tuple[Head, ...] | None:
        return self.heads

    def first_layer(self, n_layers: int) -> int:
        return first_of(self.heads, n_layers)

    def keys(self, enc: Encoded, rows: torch.Tensor) -> torch.Tensor:
        """(b, T) bool: the key positions whose edges from the target are cut, per sentence."""
        if self.edges == "cue":
            return enc.cue_mask
        out = torch.zeros_like(enc.cue_mask)
        for b, row in enumerate(rows.tolist()):
            first_target = int(enc.target_mask[b].nonzero()[0])
            pool = [k for k in range(first_target) if not enc.cue_mask[b, k]]
            take = min(int(enc.cue_mask[b].sum()), len(pool))
            rng = np.random.default_rng([self.seed, row])
            out[b, rng.choice(pool, size=take, replace=False) if take else []] = True
        return out

    def edge_mask(self, sites: Sites, layer: int, batch: Batch) -> torch.Tensor | None:
        """(b, H, T, T) bool edges to cut in ``layer`` (None when the layer has no chosen head)."""
        heads = all_heads(self.heads, sites.n_layers, sites.n_heads).get(layer)
        if not heads:
            return None
        enc = batch.enc
        if self.key not in batch.cut_keys:  # the same keys in every layer (random ones drawn per sentence once)
            batch.cut_keys[self.key] = self.keys(enc, batch.rows)
        pairs = enc.target_mask[:, :, None] & batch.cut_keys[self.key][:, None, :]  # (b, q, k)
        chosen = torch.zeros(sites.n_heads, dtype=torch.bool, device=pairs.device)
        chosen[heads] = True
        return pairs[:, None] & chosen[None, :, None, None]

    def edit(self, sites: Sites, layer: int, batch: Batch) -> None:
        cut = self.edge_mask(sites, layer, batch)
        if cut is None:
            return
        if self.mode == "post":
            op = sites.probs(layer)
            op.output = op.output.masked_fill(cut, 0.0)
            return
        call = sites.attention_call(layer)
        args, kwargs = call.inputs
        i = sites.map.mask_arg
        mask = sites.mask_of(args)
        new = torch.where(cut, torch.finfo(mask.dtype).min, mask.expand(-1, cut.shape[1], -1, -1))
        call.inputs = ((*args[:i], new, *args[i + 1:]), kwargs)


@dataclass(frozen=True)
class QKEdit(Intervention):
    """Zero a head's Q and K weights, or copy them from another checkpoint (refused where not exact)."""

    kind: ClassVar[str] = "qk"
    heads: tuple[Head, ...] | None = ()
    method: Literal["zero", "copy"] = "zero"
    source_step: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", heads_of(self.heads))
        if self.method not in ("zero", "copy"):
            raise ValueError(f"QK edit method {self.method!r}: choose zero or copy")
        if (self.method == "copy") != (self.source_step is not None):
            raise ValueError("QK edit: give source_step exactly when method is 'copy'")

    def label(self) -> str:
        src = f"step{self.source_step}" if self.source_step is not None else ""
        return "-".join(p for p in (self.method + src, heads_label(self.heads)))

    def head_set(self) -> tuple[Head, ...] | None:
        return self.heads

    @property
    def donor_step(self) -> int | None:
        return self.source_step

    def first_layer(self, n_layers: int) -> int:
        return first_of(self.heads, n_layers)

    def donor_layers(self, n_layers: int) -> set[int]:
        return {l for l, _ in self.heads} if self.heads is not None else set(range(n_layers))

    @contextmanager
    def weights(self, sites: Sites, donor: Donor | None
                ) -> Iterator[None]:
        if self.method == "copy" and donor is None:
            raise ValueError(f"{self.condition}: copying Q/K needs the step-{self.source_step} weights (donor)")
        heads = all_heads(self.heads, sites.n_layers, sites.n_heads)
        why = qk_refusal(sites.model, self.method) if heads else None
        if why is not None:
            raise Refused(f"{self.condition}: refused on this architecture: {why}")
        # with grouped-query attention a key head serves a group: zeroing the queries alone is the exact edit
        parts = ("q",) if sites.n_kv_heads < sites.n_heads else ("q", "k")
        saved = []
        try:
            with torch.no_grad():
                for layer, hs in heads.items():
                    for head in hs:
                        for name, p, index in sites.qk_params(layer, head, parts):
                            saved.append((p, index, p.data[index].clone()))
                            p.data[index] = 0 if donor is None else donor[layer][name][index].to(p.dtype)
            yield
        finally:
            with torch.no_grad():
                for p, index, old in reversed(saved):
                    p.data[index] = old


@dataclass(frozen=True)
class Compose(Intervention):
    """Several interventions at once: weight edits stacked, trace edits applied in execution order per layer."""

    kind: ClassVar[str] = "compose"
    parts: tuple[Intervention, ...] = ()

    def __post_init__(self) -> None:
        steps = {p.donor_step for p in self.parts if p.donor_step is not None}
        if len(steps) > 1:
            raise ValueError(f"composed interventions copy weights from different steps {sorted(steps)}")

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "parts": [p.spec() for p in self.parts]}

    def label(self) -> str:
        return f"{len(self.parts)}parts"

    def validate(self, n_layers: int, n_heads: int) -> None:
        for p in self.parts:
            p.validate(n_layers, n_heads)

    def leaves(self) -> tuple[Edit, ...]:
        return tuple(leaf for p in self.parts for leaf in p.leaves())

    def first_layer(self, n_layers: int) -> int:
        return min((p.first_layer(n_layers) for p in self.parts), default=n_layers)

    def edit(self, sites: Sites, layer: int, batch: Batch) -> None:
        # execution order inside a layer: attention scores/probabilities first, then the heads' outputs
        for p in sorted(self.parts, key=lambda p: isinstance(p, HeadAblation)):
            p.edit(sites, layer, batch)

    @contextmanager
    def weights(self, sites: Sites, donor: Donor | None
                ) -> Iterator[None]:
        with ExitStack() as stack:
            for p in self.parts:
                stack.enter_context(p.weights(sites, donor if p.donor_step is not None else None))
            yield

    @property
    def donor_step(self) -> int | None:
        return next((p.donor_step for p in self.parts if p.donor_step is not None), None)

    def donor_layers(self, n_layers: int) -> set[int]:
        return set().union(*(p.donor_layers(n_layers) for p in self.parts)) if self.parts else set()


@dataclass(frozen=True)
class Kind:
    """One intervention kind by name (stage 4's methods, the intervention explorer's choices): what it does to the
    chosen heads, and what it needs: a per-head QK weight edit (``qk``) is refused where the architecture cannot
    apply it exactly, and ``copy`` needs the checkpoint to copy from (:func:`copy_source`)."""

    name: str
    what: str
    qk: Literal["zero", "copy"] | None = None

    @property
    def needs_source(self) -> bool:
        """Whether it needs ``source_step``, the checkpoint it copies weights from."""
        return self.qk == "copy"

    def refusal(self, model_or_config: Any) -> str | None:
        """Why this kind cannot be applied exactly to this architecture, or None
        (:func:`lexprobe.engine.sites.qk_refusal`)."""
        return None if self.qk is None else qk_refusal(model_or_config, self.qk)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("none", "the intact model"),
    Kind("zero", "outputs zeroed"),
    Kind("mean", "outputs replaced by their mean over the stimulus set"),
    Kind("resample", "outputs taken from another sentence"),
    Kind("knockout", "attention edges from the target to the cue cut"),
    Kind("qk-zero", "Q and K weights zeroed", qk="zero"),
    Kind("qk-copy", "Q and K weights copied from the earliest checkpoint after step 0", qk="copy"),
)}
"""The intervention kinds by name, each with what it does to the chosen heads and what it needs."""


def kinds_help(names: Iterable[str]) -> str:
    """``name (what it does)`` for each kind of ``names``, comma-separated: the kinds as help texts list them."""
    return ", ".join(f"{name} ({KINDS[name].what})" for name in names)


def copy_source(steps: Iterable[int]) -> int | None:
    """The checkpoint ``qk-copy`` copies Q and K from: the earliest of ``steps`` after 0 (step 1 where it is there;
    None if none)."""
    return min((s for s in steps if s > 0), default=None)


def intervention_of(kind: str, heads: tuple[Head, ...] | None, seed: int = 0,
                    source_step: int | None = None) -> Intervention | None:
    """The intervention a kind of :data:`KINDS` names on ``heads``; ``none`` or no heads: the intact model (None).
    ``seed`` seeds a resample's donors; ``source_step`` is the checkpoint a kind that needs one (``qk-copy``) copies
    from (:func:`copy_source`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown intervention kind {kind!r}; choose from {tuple(KINDS)}")
    if kind == "none" or (heads is not None and not heads):
        return None
    spec = KINDS[kind]
    if spec.needs_source and source_step is None:
        raise ValueError(f"{kind} needs the step to copy Q and K from (source_step)")
    if kind == "knockout":
        return EdgeKnockout(heads)
    if spec.qk is not None:
        return QKEdit(heads, spec.qk, source_step if spec.needs_source else None)
    method = cast(Literal["zero", "mean", "resample"], kind)  # the kinds left are the ablation methods
    return HeadAblation(heads, method, seed=seed if kind == "resample" else 0)


def random_head_sets(n_layers: int, n_heads: int, exclude: tuple[Head, ...], size: int, n: int, seed: int = 0,
                     layer_matched: bool = False) -> list[tuple[Head, ...]]:
    """``n`` distinct seeded random sets of ``size`` heads drawn from the heads not in ``exclude`` (all possible
    sets, in random order, when there are fewer); with ``layer_matched`` each set has as many heads in each layer
    as ``exclude``."""
    rng = np.random.default_rng(seed)
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in set(exclude)]
    if size > len(pool):
        raise ValueError(f"cannot draw {size} heads from the {len(pool)} non-target heads")
    if layer_matched:
        groups = []
        for layer in sorted({l for l, _ in exclude}):
            in_layer = [p for p in pool if p[0] == layer]
            want = sum(1 for l, _ in exclude if l == layer)
            if want > len(in_layer):
                raise ValueError(f"layer {layer} has only {len(in_layer)} non-target heads, {want} needed")
            groups.append((in_layer, want))
    else:
        groups = [(pool, size)]
    possible = math.prod(math.comb(len(g), k) for g, k in groups)
    if possible <= n:
        every = [tuple(sorted(sum(parts, ()))) for parts in itertools.product(
            *(itertools.combinations(g, k) for g, k in groups))]
        return [every[i] for i in rng.permutation(len(every))]
    out: dict[tuple[Head, ...], None] = {}
    while len(out) < n:
        picked = [g[i] for g, k in groups for i in rng.choice(len(g), k, replace=False)]
        out[tuple(sorted(picked))] = None
    return list(out)
