"""Shared setup for benchmarks: a random pythia-14m-shaped checkpoint, a tokenizer trained on the stimuli, the
engine's batches and a bare forward over them."""

from __future__ import annotations

import torch
from transformers import GPTNeoXForCausalLM

from lexprobe.checkpoints.bpe import train_tokenizer
from lexprobe.checkpoints.shapes import pythia_config, random_model
from lexprobe.engine.batching import split_rows
from lexprobe.engine.sites import sites_of
from lexprobe.stimuli.align import Encoded, encode
from lexprobe.stimuli.tables import Stimuli


def pythia14m_random(seed: int) -> GPTNeoXForCausalLM:
    """Random weights in pythia-14m's exact shape (6 layers, 4 heads, hidden 128, vocab 50304), eager attention."""
    return random_model(pythia_config("14m"), seed)


def stimulus_tokenizer(stimuli: Stimuli):
    """A byte-level BPE (Pythia conventions) trained on the stimulus sentences."""
    return train_tokenizer(list(stimuli.sentences["sentence"]) * 5, vocab_size=1000)


def engine_batches(model: torch.nn.Module, tok: object, stimuli: Stimuli, batch_size: int | None) -> list[Encoded]:
    """The batches :func:`lexprobe.engine.extract.measure` runs on ``model``: sentences sorted by length, split by
    :func:`lexprobe.engine.batching.split_rows`, each trimmed to its longest sentence."""
    enc = encode(tok, stimuli.sentences, pad_id=tok.pad_token_id)
    order = torch.argsort(enc.lengths, stable=True)
    return [enc.rows(idx) for idx in split_rows(sites_of(model), order, enc.lengths, batch_size)]


def bare_forward(model: torch.nn.Module, batches: list[Encoded]) -> None:
    """The base model with attentions on already encoded batches; nothing read out or reduced."""
    with torch.inference_mode():
        for rows in batches:
            model.gpt_neox(input_ids=rows.input_ids, attention_mask=rows.attention_mask, output_attentions=True)
