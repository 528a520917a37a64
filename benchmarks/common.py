"""Shared setup for benchmarks: a random pythia-14m-shaped checkpoint and a tokenizer trained on the stimuli."""

from __future__ import annotations

from transformers import GPTNeoXForCausalLM

from lexprobe.bpe import train_tokenizer
from lexprobe.shapes import pythia_config, random_model
from lexprobe.stimuli import Stimuli


def pythia14m_random(seed: int) -> GPTNeoXForCausalLM:
    """Random weights in pythia-14m's exact shape (6 layers, 4 heads, hidden 128, vocab 50304), eager attention."""
    return random_model(pythia_config("14m"), seed)


def stimulus_tokenizer(stimuli: Stimuli):
    """A byte-level BPE (Pythia conventions) trained on the stimulus sentences."""
    return train_tokenizer(list(stimuli.sentences["sentence"]) * 5, vocab_size=1000)
