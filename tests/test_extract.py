"""The measurement engine against an independent per-sentence implementation; batching; alignment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_tables

from lexprobe.engine import batching
from lexprobe.engine.batching import split_rows
from lexprobe.engine.extract import ExtractConfig, cosine_distances, measure
from lexprobe.engine.interventions import HeadAblation
from lexprobe.engine.reference import measure_reference
from lexprobe.engine.sites import sites_of
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


@pytest.mark.parametrize("size", [64, None, "tight"])
def test_batched_equals_unbatched(model, tokenizer, few, size, monkeypatch):
    if size == "tight":  # by memory, with a budget that holds a few sentences: several uneven batches
        monkeypatch.setattr(batching, "BATCH_BYTES", batching.activation_bytes(sites_of(model), 3, 12))
        size = None
    one = measure(model, tokenizer, few, ExtractConfig(batch_size=1), progress=False)
    many = measure(model, tokenizer, few, ExtractConfig(batch_size=size), progress=False)
    for name in ("heads", "distances"):
        num = one[name].select_dtypes("number").columns
        np.testing.assert_allclose(one[name][num], many[name][num], atol=1e-5)
    e1, e2 = np.stack(one["embeddings"]["embedding"]), np.stack(many["embeddings"]["embedding"])
    np.testing.assert_allclose(e1, e2, atol=1e-5)


def test_split_rows_by_memory(model, tokenizer, few, monkeypatch):
    sites = sites_of(model)
    enc = encode(tokenizer, few.sentences, pad_id=tokenizer.pad_token_id)
    order = torch.argsort(enc.lengths, stable=True)
    assert [len(b) for b in split_rows(sites, order, enc.lengths, 4)][:2] == [4, 4]
    assert len(split_rows(sites, order, enc.lengths)) == 1  # a tiny model: the whole set fits the default budget
    budget = batching.activation_bytes(sites, 3, int(enc.lengths.max()))
    monkeypatch.setattr(batching, "BATCH_BYTES", budget)
    parts = split_rows(sites, order, enc.lengths)
    assert torch.equal(torch.cat(parts), order) and len(parts) > len(order) // 6
    for rows in parts:  # each batch fits at its longest sentence, and one more sentence would not have
        assert batching.activation_bytes(sites, len(rows), int(enc.lengths[rows].max())) <= budget or len(rows) == 1
    for rows, after in zip(parts, parts[1:]):
        grown = torch.cat([rows, after[:1]])
        assert batching.activation_bytes(sites, len(grown), int(enc.lengths[grown].max())) > budget
    with pytest.raises(ValueError, match="batch_size=0"):
        split_rows(sites, order, enc.lengths, 0)


def test_cosine_distances_are_torch_cosine_to_the_bit():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(3, 40, 4, 24, generator=g) * torch.logspace(-3, 3, 40)[None, :, None, None]
    emb[:, 5] = 0  # a zero vector: the same clamp
    s1, s2 = (torch.randint(0, 40, (60,), generator=g).numpy() for _ in range(2))
    got = cosine_distances(emb, s1, s2)
    for k in range(3):
        want = 1 - torch.nn.functional.cosine_similarity(emb[k, s1].double(), emb[k, s2].double(), dim=-1)
        assert torch.equal(got[k], want) and torch.equal(cosine_distances(emb[k], s1, s2), want)


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


def test_a_bad_batch_size_is_refused_before_anything_is_trained(tmp_path, monkeypatch, capsys):
    from lexprobe.cli import main

    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path))
    monkeypatch.setenv("LEXPROBE_SMOKE", "1")
    assert main(["inflection", "--batch-size", "0"]) == 2
    assert "batch_size=0: give at least 1 sentence per forward pass" in capsys.readouterr().err
    assert not (tmp_path / "organism").exists()  # refused before the organism was trained
    with pytest.raises(ValueError, match="batch_size=-1"):
        ExtractConfig(batch_size=-1)
