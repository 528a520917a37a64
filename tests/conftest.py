"""Shared fixtures: tiny GPT-NeoX models and tokenizers built inside the tests (never the network)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from transformers import GPTNeoXForCausalLM

from lexprobe.checkpoints.bpe import train_tokenizer
from lexprobe.checkpoints.hubcache import add_revision
from lexprobe.checkpoints.shapes import neox_config, random_model
from lexprobe.checkpoints.suites import hub_cache
from lexprobe.stimuli.perturb import neutral
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


@pytest.fixture(scope="module")
def few(stimuli):
    """Four nouns' sentences and pairs (modules that need another subset define their own ``few``)."""
    return stimuli.subset(sorted(stimuli.pairs["word"].unique())[:4])


@pytest.fixture(scope="module")
def cf(few, tokenizer):
    """The neutral counterfactuals of ``few`` (patching's counterfactual set)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return neutral(few, tokenizer=tokenizer)


@pytest.fixture()
def model(tokenizer):
    return tiny_model(len(tokenizer))


def assert_same_tables(got: dict, want: dict, atol: float, rtol: float = 0.0) -> None:
    """The engine's ``heads`` and ``distances`` tables equal another computation's (same keys, values within
    ``atol`` + ``rtol``), row for row after sorting by their keys."""
    for name, keys in (("heads", ["sentence_id", "layer", "head"]), ("distances", ["pair_id", "layer"])):
        a = got[name].sort_values(keys).reset_index(drop=True)
        b = want[name].sort_values(keys).reset_index(drop=True)
        assert len(a) == len(b) > 0
        pd.testing.assert_frame_equal(a[keys], b[keys], check_dtype=False)
        for col in a.columns.difference(keys):
            np.testing.assert_allclose(a[col], b[col], atol=atol, rtol=rtol, err_msg=f"{name}.{col}")


# A tiny study: the suite and stimuli the study-level tests share (tests/test_study.py, tests/test_stage_protocol.py)
REPO = "lexprobe-test/study-neox{seed_suffix}"
STEPS = (0, 1, 2, 4, 8)
SMALL = {"n_boot": 10, "n_perm": 50, "n_random": 2, "n_random_dev": 1, "map_steps": 2, "perturb_steps": 2,
         "methods": ("zero", "knockout"), "progress": False}


@pytest.fixture(scope="module")
def suite(tmp_path_factory, tokenizer):
    """Two seeds x five checkpoints of a tiny random GPT-NeoX, in a hub cache built here."""
    d = tmp_path_factory.mktemp("hub")
    for seed in (0, 1):
        for step in STEPS:
            repo = REPO.format(seed_suffix=f"-seed{seed}" if seed else "")
            add_revision(d, repo, f"step{step}", tiny_model(len(tokenizer), seed=100 * seed + step), tokenizer)
    return hub_cache(d, REPO, models=("tiny",), seeds=(0, 1), name="study-tiny")


@pytest.fixture(scope="module")
def small(stimuli):
    return stimuli.subset(sorted(stimuli.pairs["word"].unique())[:6], name="small6")
