"""A slow, plainly written per-sentence implementation of the engine's measurements.

One HF forward per sentence with ``output_hidden_states`` and ``output_attentions``, Python loops over layers and
heads. It shares no computation with :mod:`lexprobe.engine.extract`, so tests use it to validate the engine and
``benchmarks/extract_speed.py`` uses it as the straightforward baseline.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd
import torch

from lexprobe.stimuli.align import align
from lexprobe.stimuli.tables import Stimuli

if TYPE_CHECKING:  # the engine knows no suite: the tokenizer's type straight from transformers
    from transformers import PreTrainedTokenizerBase


def measure_reference(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                      stimuli: Stimuli) -> dict[str, pd.DataFrame]:
    """Per-sentence loop producing the same ``heads`` and ``distances`` tables as the engine."""
    head_rows, embs = [], {}
    for r in stimuli.sentences.itertuples(index=False):
        ids, t_idx, c_idx, _ = align(tokenizer, r.sentence, r.string, r.cue)
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([ids]), output_hidden_states=True, output_attentions=True)
        embs[r.sentence_id] = [h[0, t_idx].mean(0) for h in out.hidden_states]
        others = [q for q in range(1, len(ids)) if q not in t_idx]
        for layer, att in enumerate(out.attentions):
            for head in range(att.shape[1]):
                a = att[0, head]
                cue = sum(float(a[q, k]) for q in t_idx for k in c_idx) / len(t_idx)
                prev = sum(float(a[q, q - 1]) for q in others) / len(others) if others else math.nan
                ent = 0.0
                for q in t_idx:
                    ent += -sum(float(p) * math.log(float(p)) for p in a[q, : q + 1] if p > 0)
                head_rows.append((r.sentence_id, layer, head, cue, prev, ent / len(t_idx)))
    heads = pd.DataFrame(head_rows, columns=["sentence_id", "layer", "head", "cue_attn", "prev_attn", "entropy"])
    dist_rows = []
    for p in stimuli.pairs.itertuples(index=False):
        for layer, (a, b) in enumerate(zip(embs[p.s1], embs[p.s2])):
            cos = float(torch.dot(a.double(), b.double()) / (a.double().norm() * b.double().norm()))
            dist_rows.append((p.pair_id, layer, 1 - cos))
    return {"heads": heads, "distances": pd.DataFrame(dist_rows, columns=["pair_id", "layer", "distance"])}
