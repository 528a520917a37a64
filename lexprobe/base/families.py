"""The model families lexprobe measures, by ``config.model_type``, and the encoders it refuses by name.

The one list of them: loading (:mod:`lexprobe.checkpoints.suites`, :mod:`lexprobe.checkpoints.integrity`), the
engine's site table (:mod:`lexprobe.engine.sites`, one row per family), the organism's ``arch`` option and the
command line's ``--arch`` all read it.
"""

from __future__ import annotations

FAMILIES: dict[str, str] = {
    "gpt_neox": "Pythia: packed query_key_value with [Q|K|V] per head; rotary on 25% of each head; parallel attention "
                "and MLP",
    "gpt2": "Conv1D weights stored (in, out); c_attn packs all heads' Q, then all K, then all V; learned positions "
            "(hidden state 0 = tokens + positions); the CRFM runs scale scores by 1/(layer+1); their "
            "upcast-and-reorder path is routed through eager attention",
    "llama": "Llama, Amber, SmolLM2: separate q/k/v projections, RMSNorm, rotary; with grouped-query attention a key "
             "head serves several query heads",
    "olmo": "OLMo 1: Llama's modules with non-parametric layer norm and optional QKV clipping",
    "olmo2": "OLMo 2: RMSNorm of Q and K over all heads together (a per-head Q/K weight edit rescales every head); "
             "norms after attention and MLP",
}
"""``model_type`` -> what sets the family apart for lexprobe (one line each, for the docs and the report)."""

ENCODERS = ("bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta", "modernbert")
"""Encoders, refused by name: every position sees every other, so target-position patching needs a causal model."""
