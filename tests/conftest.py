"""Shared fixtures: tiny GPT-NeoX models and tokenizers built inside the tests (never the network)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from lexprobe.bpe import train_tokenizer
from lexprobe.stimuli import load_stimuli


def tiny_model(vocab: int, seed: int = 0, layers: int = 2, heads: int = 4, hidden: int = 32) -> GPTNeoXForCausalLM:
    """A random GPT-NeoX with pythia's layout at toy size, eager attention."""
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden, rotary_pct=0.25, max_position_embeddings=128,
                        use_parallel_residual=True, attn_implementation="eager", tie_word_embeddings=False)
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def stimuli():
    return load_stimuli()


@pytest.fixture(scope="session")
def tokenizer(stimuli):
    texts = list(stimuli.sentences["sentence"]) * 3
    return train_tokenizer(texts, vocab_size=400)


@pytest.fixture()
def model(tokenizer):
    return tiny_model(len(tokenizer))
