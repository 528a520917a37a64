"""The measurement engine against an independent per-sentence implementation; batching; alignment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_tables

from lexprobe.engine.extract import ExtractConfig, measure
from lexprobe.engine.interventions import HeadAblation
from lexprobe.engine.reference import measure_reference
from lexprobe.stimuli.align import align, encode
from lexprobe.stimuli.tables import StimulusError


@pytest.fixture(scope="module")
def few(stimuli):
    return stimuli.subset(sorted(stimuli.pairs["word"].unique())[:5])


def test_engine_matches_reference(model, tokenizer, few):
    fast = measure(model, tokenizer, few, ExtractConfig(batch_size=7), progress=False)
    assert_same_tables(fast, measure_reference(model, tokenizer, few), atol=1e-5, rtol=1e-4)
    # the statistics are not degenerate: attention spreads, distances differ between pairs
    assert fast["heads"]["entropy"].gt(0.05).mean() > 0.5
    assert fast["distances"].query("layer > 0")["distance"].std() > 0


def test_batched_equals_unbatched(model, tokenizer, few):
    one = measure(model, tokenizer, few, ExtractConfig(batch_size=1), progress=False)
    many = measure(model, tokenizer, few, ExtractConfig(batch_size=64), progress=False)
    for name in ("heads", "distances"):
        num = one[name].select_dtypes("number").columns
        np.testing.assert_allclose(one[name][num], many[name][num], atol=1e-5)
    e1, e2 = np.stack(one["embeddings"]["embedding"]), np.stack(many["embeddings"]["embedding"])
    np.testing.assert_allclose(e1, e2, atol=1e-5)


def test_embedding_layers_follow_hf_convention(model, tokenizer, few):
    out = measure(model, tokenizer, few, progress=False)
    emb = out["embeddings"]
    assert emb["layer"].max() == model.config.num_hidden_layers
    r = few.sentences.iloc[0]
    ids, t_idx, _, _ = align(tokenizer, r.sentence, r.string, r.cue)
    with torch.inference_mode():
        hs = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    for layer in (0, len(hs) - 1):
        got = emb.query("sentence_id == @r.sentence_id and layer == @layer")["embedding"].iloc[0]
        np.testing.assert_allclose(got, hs[layer][0, t_idx].mean(0).numpy(), atol=1e-5)


def test_ablation_changes_only_downstream_layers(model, tokenizer, few):
    base = measure(model, tokenizer, few, progress=False)
    abl = measure(model, tokenizer, few, intervention=HeadAblation(((0, 0),)), progress=False)
    layer0 = abl["heads"].query("layer == 0")
    pd.testing.assert_frame_equal(layer0.reset_index(drop=True),
                                  base["heads"].query("layer == 0").reset_index(drop=True))
    changed = ~np.isclose(abl["distances"]["distance"], base["distances"]["distance"], atol=1e-7)
    assert changed[abl["distances"]["layer"] >= 1].any()
    assert not changed[abl["distances"]["layer"] == 0].any()


def test_alignment_multitoken_and_leading_space(tokenizer):
    ids, t_idx, c_idx, toks = align(tokenizer, "Nobody mentioned the qzxv wobblecart.", "wobblecart", "qzxv")
    assert len(t_idx) > 1 and len(c_idx) >= 1
    assert "".join(toks[i] for i in t_idx).replace("\u0120", " ").strip() == "wobblecart"
    assert max(c_idx) < min(t_idx)


def test_alignment_error_names_sentence(tokenizer):
    bad = pd.DataFrame([{"sentence_id": 7, "sentence": "The bank was muddy.", "string": "bank", "cue": "muddy"}])
    with pytest.raises(StimulusError, match="sentence_id 7"):
        encode(tokenizer, bad)


def test_repeated_target_uses_occurrence_after_cue(tokenizer):
    ids, t_idx, c_idx, toks = align(tokenizer, "The bank and the muddy bank.", "bank", "muddy")
    assert t_idx[0] > c_idx[-1]
    assert tokenizer.decode(ids[t_idx[0]: t_idx[-1] + 1]).strip() == "bank"
    assert "bank" in tokenizer.decode(ids[: c_idx[0]])  # the first 'bank' is skipped
