"""Shared fixtures: tiny GPT-NeoX models and tokenizers built inside the tests (never the network)."""

from __future__ import annotations

import os

import pytest
from transformers import GPTNeoXForCausalLM

from lexprobe.checkpoints.bpe import train_tokenizer
from lexprobe.checkpoints.shapes import neox_config, random_model
from lexprobe.stimuli.tables import load_stimuli

# sweeps run in the test's process (monkeypatched functions reach them); tests/test_scheduler.py runs the pool
os.environ["LEXPROBE_WORKERS"] = "1"


def tiny_model(vocab: int, seed: int = 0, layers: int = 2, heads: int = 4, hidden: int = 32) -> GPTNeoXForCausalLM:
    """A random GPT-NeoX with pythia's layout at toy size, eager attention."""
    return random_model(neox_config(vocab, hidden, layers, heads, positions=128), seed)


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
