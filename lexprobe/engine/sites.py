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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, cached_property, partial
from typing import TYPE_CHECKING, Any, Literal

from lexprobe.base.families import ENCODERS
from lexprobe.base.lazy import nnsight, torch

if TYPE_CHECKING:
    from nnsight import Envoy  # a wrapped module (nnsight ships no types: Any to mypy)
    from nnsight.intervention.source import SourceEnvoy  # one operation inside a module's forward
    from transformers import PreTrainedModel


class SiteError(RuntimeError):
    """A site of the site map is missing, or an edit there does not behave as an intervention must."""


@dataclass(frozen=True)
class QKLayout:
    """Where one head's queries and keys come from in a layer's weights: the modules (relative to the layer) whose
    outputs hold them, and how heads are laid out along those outputs."""

    q: str  # module computing the queries
    k: str  # module computing the keys (the same module when Q, K and V are packed)
    packing: Literal["per_head", "by_kind", "separate"]  # [Q|K|V] per head | all Q, all K, all V | own modules
    transposed: bool = False  # weights stored (in, out) (GPT-2's Conv1D): the outputs are the weight's last axis
    joint_norm: bool = False  # Q and K normalised over all heads together after the projection (OLMo-2)

    def slices(self, head: int, n_heads: int, n_kv_heads: int, head_dim: int) -> dict[str, tuple[str, slice]]:
        """``{"q": (module, output slice), "k": (module, output slice)}`` of one query head; with grouped-query
        attention the K slice is that of the key head its group shares."""
        hd = head_dim
        if self.packing == "per_head":
            start = head * 3 * hd
            return {"q": (self.q, slice(start, start + hd)), "k": (self.k, slice(start + hd, start + 2 * hd))}
        if self.packing == "by_kind":
            width = n_heads * hd
            return {"q": (self.q, slice(head * hd, (head + 1) * hd)),
                    "k": (self.k, slice(width + head * hd, width + (head + 1) * hd))}
        group = head // (n_heads // n_kv_heads)
        return {"q": (self.q, slice(head * hd, (head + 1) * hd)), "k": (self.k, slice(group * hd, (group + 1) * hd))}


@dataclass(frozen=True)
class SiteMap:
    """Module paths (relative to the wrapped ``*ForCausalLM``) and inner-operation patterns of one architecture."""

    layers: str  # the list of decoder layers
    embed: str  # module whose output is hidden state 0 (token embeddings, plus learned positions where there are)
    final_norm: str  # final layer norm; its output is the last hidden state
    attention: str  # per layer: attention module; ``output[attn_weights_index]`` is (b, H, q, k)
    head_output: str  # per layer: module whose INPUT is the heads' outputs concatenated, (b, s, H * head_dim)
    qk: QKLayout  # per layer: where each head's Q and K weights are
    attention_call: str = r"attention_interface_\d+"  # regex of the op in attention.forward calling the attention
    mask_arg: int = 4  # positional index, in that call, of the additive mask (b, 1, q, k)
    probs_op: str = r"nn_functional_dropout_\d+"  # regex of the op in the attention function: post-softmax probs
    attn_weights_index: int = 1
    attention_flags: tuple[tuple[str, Any], ...] = ()  # set on every attention module while lexprobe runs the model
    absolute_positions: bool = False  # learned absolute positions: hidden state 0 depends on a token's position


_LLAMA = dict(layers="model.layers", embed="model.embed_tokens", final_norm="model.norm", attention="self_attn",
              head_output="self_attn.o_proj", qk=QKLayout("self_attn.q_proj", "self_attn.k_proj", "separate"))
SITE_MAPS: dict[str, SiteMap] = {  # one row per family of lexprobe.base.families.FAMILIES (a test keeps them equal)
    "gpt_neox": SiteMap(layers="gpt_neox.layers", embed="gpt_neox.embed_in", final_norm="gpt_neox.final_layer_norm",
                        attention="attention", head_output="attention.dense",
                        qk=QKLayout("attention.query_key_value", "attention.query_key_value", "per_head")),
    "gpt2": SiteMap(layers="transformer.h", embed="transformer.drop", final_norm="transformer.ln_f",
                    attention="attn", head_output="attn.c_proj",
                    qk=QKLayout("attn.c_attn", "attn.c_attn", "by_kind", transposed=True),
                    attention_flags=(("reorder_and_upcast_attn", False),), absolute_positions=True),
    "llama": SiteMap(**_LLAMA),  # type: ignore[arg-type]
    "olmo": SiteMap(**_LLAMA),  # type: ignore[arg-type]
    "olmo2": SiteMap(**{**_LLAMA, "qk": QKLayout("self_attn.q_proj", "self_attn.k_proj", "separate",  # type: ignore[arg-type]
                                                 joint_norm=True)}),
}


class Refused(SiteError):
    """An intervention that cannot be applied exactly to this architecture (the message says why)."""


def site_map(model_or_config: Any) -> SiteMap:
    """The site map of a model's (or a config's) architecture, by ``config.model_type``; an encoder or an unknown
    architecture raises :class:`SiteError` saying why."""
    config = getattr(model_or_config, "config", model_or_config)
    kind = getattr(config, "model_type", type(model_or_config).__name__)
    if kind in ENCODERS:
        raise SiteError(f"{kind!r} is an encoder: every position sees every other, so patching the target's tokens "
                        f"alone cannot reproduce the clean run; lexprobe needs a causal (decoder-only) model")
    if kind not in SITE_MAPS:
        raise SiteError(f"no site map for architecture {kind!r}; lexprobe knows {sorted(SITE_MAPS)}")
    return SITE_MAPS[kind]


def head_counts(config: Any) -> tuple[int, int, int]:
    """(query heads, key/value heads, head dim) of a config."""
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(config, "head_dim", None) or int(config.hidden_size) // n_heads)
    return n_heads, n_kv, head_dim


def qk_refusal(model_or_config: Any, method: str) -> str | None:
    """Why a per-head QK weight edit (``method`` zero | copy) cannot be exact on this architecture, or None.

    * Q and K normalised over all heads together (OLMo-2): changing one head's rows rescales every head: refused.
    * Grouped-query attention: a head's keys are shared by its group, so copying them would change the other heads
      too: ``copy`` refused. ``zero`` is exact there: it zeroes the head's queries only (zero queries give zero
      scores whatever the keys, exactly as zeroing both does).
    """
    config = getattr(model_or_config, "config", model_or_config)
    sm = site_map(config)
    n_heads, n_kv, _ = head_counts(config)
    if sm.qk.joint_norm:
        return (f"{config.model_type} normalises Q and K over all heads together, so editing one head's Q/K "
                f"weights rescales every head's queries and keys; use edge knockout or activation patching")
    if method == "copy" and n_kv < n_heads:
        return (f"grouped-query attention ({n_heads} query heads share {n_kv} key heads): copying a head's keys "
                f"would change the {n_heads // n_kv - 1} other query heads of its group too")
    return None


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
    """A site map bound to one nnsight-wrapped model: envoys for each site, by layer (:func:`sites_of` binds them
    with a wrapper that sets the site map's attention flags for each run)."""

    def __init__(self, envoy: nnsight.NNsight, model: PreTrainedModel):
        self.envoy, self.model, self.map = envoy, model, site_map(model)
        self.n_layers = int(model.config.num_hidden_layers)
        self.n_heads, self.n_kv_heads, self.head_dim = head_counts(model.config)

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

    def qk_params(self, layer: int, head: int, parts: tuple[str, ...] = ("q", "k")
                  ) -> list[tuple[str, torch.nn.Parameter, tuple[slice, ...]]]:
        """One head's Q and/or K weights of ``layer``: (name relative to the layer, parameter, index) for each weight
        and bias, the index selecting the head's outputs (plain modules: weight edits happen outside traces)."""
        qk = self.map.qk
        mod_layer = attr(self.model, self.map.layers)[layer]
        out: list[tuple[str, torch.nn.Parameter, tuple[slice, ...]]] = []
        for part, (path, sl) in qk.slices(head, self.n_heads, self.n_kv_heads, self.head_dim).items():
            if part not in parts:
                continue
            mod = attr(mod_layer, path)
            out.append((f"{path}.weight", mod.weight, (slice(None), sl) if qk.transposed else (sl,)))
            if getattr(mod, "bias", None) is not None:
                out.append((f"{path}.bias", mod.bias, (sl,)))
        return out

    def qk_weights(self, layers: set[int]) -> dict[int, dict[str, torch.Tensor]]:
        """Copies of the Q and K weights (and biases) of ``layers`` by name: what a QK edit copies from a donor."""
        out: dict[int, dict[str, torch.Tensor]] = {}
        for layer in sorted(layers):
            out[layer] = {name: p.detach().clone() for name, p, _ in self.qk_params(layer, 0)}
        return out


@contextmanager
def attention_flags(model: PreTrainedModel) -> Iterator[None]:
    """The site map's attention flags set on every attention module for the duration (GPT-2:
    ``reorder_and_upcast_attn`` off, so that attention runs through the attention function, where the sites are),
    the model's own values restored after."""
    sm = site_map(model)
    flags = dict(sm.attention_flags)
    saved = [(m, name, getattr(m, name)) for m in (attr(layer, sm.attention) for layer in attr(model, sm.layers))
             for name in flags]
    for m, name, _ in saved:
        setattr(m, name, flags[name])
    try:
        yield
    finally:
        for m, name, value in saved:
            setattr(m, name, value)


@cache
def _wrapper() -> type:
    """The nnsight wrapper the sites bind: every run of the model (a trace) under :func:`attention_flags`, so the
    caller's model keeps its own settings between runs (a class made on first use: nnsight is imported lazily)."""

    class Flagged(nnsight.NNsight):
        def interleave(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
            with attention_flags(self._module):
                return super().interleave(fn, *args, **kwargs)

    return Flagged


def sites_of(model: PreTrainedModel) -> Sites:
    """The model's sites, bound to one nnsight wrapper and checked live (:func:`check_sites`) once per model; the
    wrapper sets the site map's attention flags for each run only (:func:`attention_flags`).

    They are kept on the model itself: the model and its sites then form a cycle that the garbage collector frees
    with the model (a weak-keyed cache would not: its value, holding the model, would keep its key alive)."""
    sites = model.__dict__.get("_lexprobe_sites")
    if sites is None:
        sites = Sites(_wrapper()(model), model)
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
    (name, weight, index), *_ = sites.qk_params(layer, 0, ("q",))
    saved = weight.data[index].clone()
    try:
        with torch.no_grad():
            weight.data[index] += 1.0
        if torch.equal(_final(sites, ids), intact):
            raise SiteError(f"site {name} (layer {layer}): editing head 0's queries did not change the output")
    finally:
        with torch.no_grad():
            weight.data[index] = saved
    if not torch.equal(_final(sites, ids), intact):
        raise SiteError(f"site {name} (layer {layer}): restoring the weights did not restore the output")
