"""Shared setup for benchmarks: a random pythia-14m-shaped checkpoint and a tokenizer trained on the stimuli."""

from __future__ import annotations

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from lexprobe.bpe import train_tokenizer
from lexprobe.stimuli import Stimuli

PYTHIA_14M = dict(vocab_size=50304, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
                  intermediate_size=512, rotary_pct=0.25, max_position_embeddings=2048, use_parallel_residual=True)


def pythia14m_random(seed: int) -> GPTNeoXForCausalLM:
    """Random weights in pythia-14m's exact shape (6 layers, 4 heads, hidden 128, vocab 50304), eager attention."""
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_14M, attn_implementation="eager")).eval()


def stimulus_tokenizer(stimuli: Stimuli):
    """A byte-level BPE (Pythia conventions) trained on the stimulus sentences."""
    return train_tokenizer(list(stimuli.sentences["sentence"]) * 5, vocab_size=1000)
