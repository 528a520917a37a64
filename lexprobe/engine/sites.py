"""Where the engine reads and interventions edit, per architecture: one small table of module paths as data.

A :class:`SiteMap` names, for one architecture, the modules and inner operations the engine touches. No other
module spells a path such as ``gpt_neox.layers[i].attention.dense``: the engine and :mod:`lexprobe.engine.interventions`
ask a :class:`Sites` (a site map bound to one wrapped model) for them. Inner operations of a ``forward`` (the call
of the attention function, the post-softmax probabilities) are looked up by pattern in nnsight's operation names
rather than hard-coded, and :func:`check_sites` proves on the loaded model that each site is live: editing it must
change the model's output, and a no-op edit must not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from lexprobe.base.lazy import nnsight, torch

if TYPE_CHECKING:
    from nnsight import Envoy  # a wrapped module (nnsight ships no types: Any to mypy)
    from nnsight.intervention.source import SourceEnvoy  # one operation inside a module's forward
    from transformers import PreTrainedModel


class SiteError(RuntimeError):
    """A site of the site map is missing, or an edit there does not behave as an intervention must."""


@dataclass(frozen=True)
class SiteMap:
    """Module paths (relative to the wrapped ``*ForCausalLM``) and inner-operation patterns of one architecture."""

    layers: str  # the list of decoder layers
    embed: str  # embedding module; its output is hidden state 0
    final_norm: str  # final layer norm; its output is the last hidden state
    attention: str  # per layer: attention module; ``output[attn_weights_index]`` is (b, H, q, k)
    head_output: str  # per layer: module whose INPUT is the heads' outputs concatenated, (b, s, H * head_dim)
    qkv: str  # per layer: Linear whose output rows are packed per head as [Q | K | V] blocks of head_dim
    attention_call: str  # regex of the op in attention.forward that calls the attention function (last match)
    mask_arg: int  # positional index, in that call, of the additive mask (b, 1, q, k)
    probs_op: str  # regex of the op inside the attention function whose output is the post-softmax probabilities
    attn_weights_index: int = 1


SITE_MAPS: dict[str, SiteMap] = {
    "gpt_neox": SiteMap(layers="gpt_neox.layers", embed="gpt_neox.embed_in", final_norm="gpt_neox.final_layer_norm",
                        attention="attention", head_output="attention.dense", qkv="attention.query_key_value",
                        attention_call=r"attention_interface_\d+", mask_arg=4, probs_op=r"nn_functional_dropout_\d+"),
}


def site_map(model: PreTrainedModel) -> SiteMap:
    """The site map of a model's architecture (by ``config.model_type``)."""
    kind = getattr(model.config, "model_type", type(model).__name__)
    if kind not in SITE_MAPS:
        raise SiteError(f"no site map for architecture {kind!r}; lexprobe knows {sorted(SITE_MAPS)}")
    return SITE_MAPS[kind]


def attr(obj: Any, dotted: str) -> Any:
    """``obj.a.b.c`` for ``dotted='a.b.c'`` (a module, an envoy, or whatever the path leads to)."""
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _last_match(names: tuple[str, ...], pattern: str, where: str) -> str:
    found = [n for n in names if re.fullmatch(pattern, n)]
    if not found:
        raise SiteError(f"{where}: no operation matches {pattern!r} (operations: {', '.join(names)})")
    return found[-1]


class Sites:
    """A site map bound to one nnsight-wrapped model: envoys for each site, by layer."""

    def __init__(self, envoy: nnsight.NNsight, model: PreTrainedModel):
        self.envoy, self.model, self.map = envoy, model, site_map(model)
        self.n_layers = int(model.config.num_hidden_layers)
        self.n_heads = int(model.config.num_attention_heads)
        self.head_dim = int(model.config.hidden_size) // self.n_heads

    def layer(self, i: int) -> Envoy:
        return attr(self.envoy, self.map.layers)[i]

    def embed(self) -> Envoy:
        return attr(self.envoy, self.map.embed)

    def final_norm(self) -> Envoy:
        return attr(self.envoy, self.map.final_norm)

    def attention_weights(self, i: int) -> torch.Tensor:
        """(b, H, q, k) attention probabilities of layer ``i`` as the layer used them."""
        return attr(self.layer(i), self.map.attention).output[self.map.attn_weights_index]

    def head_output(self, i: int) -> Envoy:
        """Envoy whose ``.input`` is layer ``i``'s concatenated head outputs."""
        return attr(self.layer(i), self.map.head_output)

    @cached_property
    def _call_name(self) -> str:
        src = attr(self.layer(0), self.map.attention).source
        return _last_match(src.names, self.map.attention_call, f"{self.map.layers}[0].{self.map.attention}")

    @cached_property
    def _probs_name(self) -> str:
        call = getattr(attr(self.layer(0), self.map.attention).source, self._call_name)
        return _last_match(call.source.names, self.map.probs_op, self._call_name)

    def attention_call(self, i: int) -> SourceEnvoy:
        """The attention-function call of layer ``i``; ``inputs[0][mask_arg]`` is its additive mask."""
        return getattr(attr(self.layer(i), self.map.attention).source, self._call_name)

    def mask_of(self, args: tuple) -> torch.Tensor:
        """The additive attention mask among the attention call's positional arguments (fails loudly if absent,
        as with fused kernels that build the causal mask themselves: load models with eager attention)."""
        m = args[self.map.mask_arg] if len(args) > self.map.mask_arg else None
        if not isinstance(m, torch.Tensor) or m.dim() != 4:
            raise SiteError(f"{self._call_name}: argument {self.map.mask_arg} is {type(m).__name__}, not an additive "
                            f"(b, 1, q, k) mask; load the model with attn_implementation='eager'")
        return m

    def probs(self, i: int) -> SourceEnvoy:
        """The post-softmax probabilities inside layer ``i``'s attention function (before they weight values)."""
        return getattr(self.attention_call(i).source, self._probs_name)

    def qkv_module(self, i: int) -> torch.nn.Linear:
        """The packed QKV projection of layer ``i`` (a plain module: weight edits happen outside traces)."""
        return attr(attr(self.model, self.map.layers)[i], self.map.qkv)

    def qk_rows(self, head: int) -> slice:
        """Rows of the packed QKV projection holding one head's Q and K (its block is [Q | K | V])."""
        start = head * 3 * self.head_dim
        return slice(start, start + 2 * self.head_dim)

    def qkv_weights(self, layers: set[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor | None]]:
        """Copies of the packed QKV weight and bias of ``layers``: what a QK edit copies from a donor checkpoint."""
        out: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for layer in sorted(layers):
            mod = self.qkv_module(layer)
            out[layer] = (mod.weight.detach().clone(), None if mod.bias is None else mod.bias.detach().clone())
        return out


def sites_of(model: PreTrainedModel) -> Sites:
    """The model's sites, bound to one nnsight wrapper and checked live (:func:`check_sites`) once per model.

    They are kept on the model itself: the model and its sites then form a cycle that the garbage collector frees
    with the model (a weak-keyed cache would not: its value, holding the model, would keep its key alive)."""
    sites = model.__dict__.get("_lexprobe_sites")
    if sites is None:
        sites = Sites(nnsight.NNsight(model), model)
        check_sites(sites)
        model.__dict__["_lexprobe_sites"] = sites
    return sites


def _final(sites: Sites, ids: torch.Tensor, edit: Callable[[Sites], None] | None = None) -> torch.Tensor:
    """Last hidden state of a probe input, with ``edit(sites)`` applied inside the trace."""
    with torch.inference_mode():
        with sites.envoy.trace(input_ids=ids) as tracer:
            if edit is not None:
                edit(sites)
            out = nnsight.save(sites.final_norm().output)
            tracer.stop()
    return out.clone()


def check_sites(sites: Sites, layer: int = 0) -> None:
    """Prove that every site is live on this model: an edit there changes the output, a no-op edit does not.

    Raises :class:`SiteError` naming the site otherwise (a renamed operation, a kernel that bypasses the edited
    tensor, an edit that silently lands on a copy).
    """
    vocab = int(sites.model.config.vocab_size)
    ids = (torch.arange(1, 7) * 7919 % max(vocab - 1, 1) + 1).unsqueeze(0)
    intact = _final(sites, ids)
    hd = sites.head_dim

    def head_output(s: Sites, real: bool) -> None:
        x = s.head_output(layer).input
        x[:, :, :hd] = x[:, :, :hd] + 1.0 if real else x[:, :, :hd]

    def mask(s: Sites, real: bool) -> None:
        call = s.attention_call(layer)
        args, kwargs = call.inputs
        m = s.mask_of(args)
        if real:
            m = m.clone()
            m[..., -1, 0] = torch.finfo(m.dtype).min
        call.inputs = ((*args[: s.map.mask_arg], m, *args[s.map.mask_arg + 1:]), kwargs)

    def probs(s: Sites, real: bool) -> None:
        op = s.probs(layer)
        p = op.output.clone()
        if real:
            p[..., -1, :] = 0
        op.output = p

    for name, fn in (("head output", head_output), ("attention mask", mask), ("attention probabilities", probs)):
        noop = _final(sites, ids, partial(fn, real=False))
        if not torch.equal(noop, intact):
            raise SiteError(f"site {name} (layer {layer}): a no-op edit changed the output by "
                            f"{(noop - intact).abs().max():.3g}")
        edited = _final(sites, ids, partial(fn, real=True))
        if torch.equal(edited, intact):
            raise SiteError(f"site {name} (layer {layer}): editing it did not change the output")
    qkv = sites.qkv_module(layer)
    rows = sites.qk_rows(0)
    saved = qkv.weight.data[rows].clone()
    try:
        with torch.no_grad():
            qkv.weight.data[rows] += 1.0
        if torch.equal(_final(sites, ids), intact):
            raise SiteError(f"site qkv weight (layer {layer}): editing head 0's Q/K rows did not change the output")
    finally:
        with torch.no_grad():
            qkv.weight.data[rows] = saved
    if not torch.equal(_final(sites, ids), intact):
        raise SiteError(f"site qkv weight (layer {layer}): restoring the weights did not restore the output")
