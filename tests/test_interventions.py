"""Interventions against hand computations on tiny models; no-op, composition, batching, identity, sites."""

from __future__ import annotations

import math

import nnsight
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_model

from lexprobe.engine.extract import INTACT, ExtractConfig, measure
from lexprobe.engine.interventions import (
    Batch,
    Compose,
    EdgeKnockout,
    HeadAblation,
    NoOp,
    QKEdit,
    heads_of,
)
from lexprobe.engine.sites import SITE_MAPS, SiteError, SiteMap, Sites, check_sites
from lexprobe.stimuli.align import encode


@pytest.fixture(scope="module")
def few(stimuli):
    return stimuli.subset(sorted(stimuli.pairs["word"].unique())[:5])


@pytest.fixture()
def model3(tokenizer):
    return tiny_model(len(tokenizer), layers=3)


def assert_tables_equal(a: dict, b: dict, atol: float = 0.0) -> None:
    for name in ("distances", "heads"):
        num = a[name].select_dtypes("number").columns
        np.testing.assert_allclose(a[name][num].to_numpy(), b[name][num].to_numpy(), atol=atol, rtol=0,
                                   err_msg=name)


def test_noop_reproduces_intact_exactly(model3, tokenizer, few):
    base = measure(model3, tokenizer, few, progress=False)
    noop = measure(model3, tokenizer, few, intervention=NoOp(), progress=False)
    for name in ("distances", "heads"):
        pd.testing.assert_frame_equal(base[name], noop[name])
    # an empty head set is a no-op too, on every path (trace edit, weight edit)
    for iv in (HeadAblation(()), EdgeKnockout(()), QKEdit(())):
        pd.testing.assert_frame_equal(measure(model3, tokenizer, few, intervention=iv, progress=False)["distances"],
                                      base["distances"])


def test_zero_ablation_equals_removing_the_heads_slice_of_dense(model3, tokenizer, few):
    layer, head = 1, 2
    hd = model3.config.hidden_size // model3.config.num_attention_heads
    abl = measure(model3, tokenizer, few, intervention=HeadAblation(((layer, head),)), progress=False)
    dense = model3.gpt_neox.layers[layer].attention.dense
    with torch.no_grad():
        dense.weight[:, head * hd:(head + 1) * hd] = 0  # the head's contribution to the projection, removed
    by_hand = measure(model3, tokenizer, few, progress=False)
    assert_tables_equal(abl, by_hand, atol=1e-6)
    # layers before the ablated one are untouched; later ones change
    base = measure(tiny_model(len(tokenizer), layers=3), tokenizer, few, progress=False)
    d, d0 = abl["distances"], base["distances"]
    assert np.allclose(d.query("layer <= @layer")["distance"], d0.query("layer <= @layer")["distance"], atol=1e-7)
    assert not np.allclose(d.query("layer > @layer")["distance"], d0.query("layer > @layer")["distance"], atol=1e-5)


def test_mean_and_resample_replace_by_hand_computed_values(model3, tokenizer, few):
    sites = Sites(nnsight.NNsight(model3), model3)
    enc = encode(tokenizer, few.sentences)
    lengths = enc.lengths
    with torch.inference_mode():
        out = model3(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True)
    del out
    from lexprobe.engine.extract import head_outputs

    outs = head_outputs(sites, enc, [torch.arange(len(lengths))], {0})[0]
    real = torch.arange(outs.shape[1])[None, :] < lengths[:, None]
    mean = HeadAblation(((0, 1),), "mean").replacement(0, outs, lengths, few.sentences["word"].to_numpy())
    np.testing.assert_allclose(mean[0, 0], outs[real].mean(0), atol=1e-6)
    rs = HeadAblation(((0, 1),), "resample", seed=5)
    words = few.sentences["word"].to_numpy()
    donors = rs.donors(lengths.numpy(), words)
    assert (words[donors] != words).all() or (lengths.numpy()[donors] < lengths.numpy()).any()
    rep = rs.replacement(0, outs, lengths, words)
    i = 3
    n_i = int(lengths[i])
    np.testing.assert_allclose(rep[i, :n_i], outs[donors[i], :n_i], atol=0)
    assert (donors == rs.donors(lengths.numpy(), words)).all()  # seeded
    assert not (donors == HeadAblation(((0, 1),), "resample", seed=6).donors(lengths.numpy(), words)).all()


@pytest.mark.parametrize("mode", ["pre", "post"])
def test_edge_knockout_equals_explicit_masked_softmax(model3, tokenizer, few, mode):
    sites = Sites(nnsight.NNsight(model3), model3)
    enc = encode(tokenizer, few.sentences.iloc[:6])
    rows = torch.arange(6)
    iv = EdgeKnockout(((0, 1), (0, 3)), mode=mode)
    with torch.inference_mode():
        with sites.envoy.trace(input_ids=enc.input_ids, attention_mask=enc.attention_mask) as tracer:
            args, _ = sites.attention_call(0).inputs
            q, k, v, mask = (nnsight.save(a) for a in args[1:5])
            tracer.stop()
        with sites.envoy.trace(input_ids=enc.input_ids, attention_mask=enc.attention_mask) as tracer:
            iv.edit(sites, 0, Batch(enc, rows))
            got = nnsight.save(sites.head_output(0).input)
            probs = nnsight.save(sites.attention_weights(0))
            tracer.stop()
    scores = q @ k.transpose(2, 3) / math.sqrt(q.shape[-1]) + mask
    cut = enc.target_mask[:, None, :, None] & enc.cue_mask[:, None, None, :]
    cut = cut & torch.tensor([False, True, False, True])[None, :, None, None]
    if mode == "pre":
        p = torch.softmax(scores.masked_fill(cut, -math.inf), -1)
    else:
        p = torch.softmax(scores, -1).masked_fill(cut, 0.0)
    by_hand = (p @ v).transpose(1, 2).reshape(got.shape)
    real = enc.attention_mask.bool()
    torch.testing.assert_close(got[real], by_hand[real], atol=1e-6, rtol=1e-5)
    assert probs[cut].abs().max() == 0
    rows_sum = probs.sum(-1)[:, [1, 3]][enc.target_mask[:, None, :].expand(-1, 2, -1)]
    if mode == "pre":
        torch.testing.assert_close(rows_sum, torch.ones_like(rows_sum))  # renormalised
    else:
        assert (rows_sum < 1 - 1e-4).all()  # mass removed, not renormalised


def test_random_edges_avoid_cue_and_target_and_match_cue_count(tokenizer, few):
    enc = encode(tokenizer, few.sentences)
    keys = EdgeKnockout(None, edges="random", seed=1).keys(enc, torch.arange(len(enc.lengths)))
    assert not (keys & enc.cue_mask).any() and not (keys & enc.target_mask).any()
    first_target = enc.target_mask.float().argmax(1)
    assert all(int(keys[i].nonzero().max()) < int(first_target[i]) for i in range(len(keys)) if keys[i].any())
    np.testing.assert_array_equal(keys.sum(1), torch.minimum(enc.cue_mask.sum(1), first_target - enc.cue_mask.sum(1)))
    again = EdgeKnockout(None, edges="random", seed=1).keys(enc, torch.arange(len(enc.lengths)))
    assert torch.equal(keys, again)


def test_qk_edit_changes_only_that_heads_scores_and_restores(model3, tokenizer, few):
    sites = Sites(nnsight.NNsight(model3), model3)
    before = {k: v.clone() for k, v in model3.state_dict().items()}
    ids = encode(tokenizer, few.sentences.iloc[:1]).input_ids
    with torch.inference_mode():
        base = model3(input_ids=ids, output_attentions=True).attentions
    with QKEdit(((1, 2),)).weights(sites, None):
        with torch.inference_mode():
            edited = model3(input_ids=ids, output_attentions=True).attentions
    torch.testing.assert_close(edited[0], base[0], atol=0, rtol=0)
    others = [h for h in range(4) if h != 2]
    torch.testing.assert_close(edited[1][:, others], base[1][:, others], atol=0, rtol=0)
    n = ids.shape[1]
    uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]  # zero Q.K scores: uniform attention
    torch.testing.assert_close(edited[1][0, 2], uniform, atol=1e-6, rtol=0)
    for k, v in model3.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_qk_weights_restored_even_on_error(model3):
    sites = Sites(nnsight.NNsight(model3), model3)
    before = model3.gpt_neox.layers[0].attention.query_key_value.weight.clone()
    with pytest.raises(RuntimeError, match="boom"):
        with QKEdit(((0, 0),)).weights(sites, None):
            assert not torch.equal(model3.gpt_neox.layers[0].attention.query_key_value.weight, before)
            raise RuntimeError("boom")
    assert torch.equal(model3.gpt_neox.layers[0].attention.query_key_value.weight, before)


def test_qk_copy_from_donor(model3, tokenizer, few):
    base = measure(model3, tokenizer, few, progress=False)
    iv = QKEdit(((1, 0),), method="copy", source_step=1)
    with pytest.raises(ValueError, match="donor"):
        measure(model3, tokenizer, few, intervention=iv, progress=False)
    same = Sites(None, model3).qk_weights(iv.donor_layers(3))
    assert_tables_equal(measure(model3, tokenizer, few, intervention=iv, donor=same, progress=False), base)
    other = tiny_model(len(tokenizer), seed=9, layers=3)
    changed = measure(model3, tokenizer, few, intervention=iv, donor=Sites(None, other).qk_weights({1}),
                      progress=False)
    h = changed["heads"]
    assert np.allclose(h.query("layer == 0")["cue_attn"], base["heads"].query("layer == 0")["cue_attn"])
    assert not np.allclose(h.query("layer == 1 and head == 0")["cue_attn"],
                           base["heads"].query("layer == 1 and head == 0")["cue_attn"])


def test_interventions_compose(model3, tokenizer, few):
    a, b = HeadAblation(((0, 0),)), HeadAblation(((2, 1),))
    both = measure(model3, tokenizer, few, intervention=HeadAblation(((2, 1), (0, 0))), progress=False)
    for iv in (Compose((a, b)), Compose((b, a))):
        assert_tables_equal(measure(model3, tokenizer, few, intervention=iv, progress=False), both)
    # weight edit + trace edit + knockout together differ from each alone and run in one trace
    mixed = Compose((QKEdit(((1, 1),)), EdgeKnockout(((1, 2),)), HeadAblation(((1, 2),), "mean")))
    out = measure(model3, tokenizer, few, intervention=mixed, progress=False)
    assert out["heads"].query("layer == 1 and head == 2")["cue_attn"].max() == 0


@pytest.mark.parametrize("iv", [EdgeKnockout(None), HeadAblation(((1, 3), (2, 0)), "mean"),
                                HeadAblation(((1, 3),), "resample", seed=2), QKEdit(((0, 2),))],
                         ids=lambda iv: iv.condition)
def test_batched_equals_unbatched_under_intervention(model3, tokenizer, few, iv):
    one = measure(model3, tokenizer, few, ExtractConfig(batch_size=1), intervention=iv, progress=False)
    many = measure(model3, tokenizer, few, ExtractConfig(batch_size=64), intervention=iv, progress=False)
    assert_tables_equal(one, many, atol=1e-5)


REUSED = [HeadAblation(((2, 0),)), HeadAblation(((1, 3), (2, 0)), "mean"), HeadAblation(((1, 1),), "resample", seed=4),
          EdgeKnockout(((1, 2), (2, 2))), EdgeKnockout(((2, 1),), edges="random", seed=1),
          EdgeKnockout(((1, 0),), mode="post"), QKEdit(((2, 3),)),
          Compose((HeadAblation(((2, 1),)), EdgeKnockout(((1, 3),))))]


@pytest.mark.parametrize("iv", REUSED, ids=lambda iv: iv.condition)
def test_layers_below_the_first_edit_are_reused_with_the_same_numbers(model3, tokenizer, few, iv, monkeypatch):
    """Layers an intervention leaves alone are skipped and the intact ones used: bit for bit the tables of the
    full forward, and after the first unit the skipped layers do not run at all."""
    from lexprobe.engine import extract

    first = iv.first_layer(3)
    assert first == min(layer for layer, _ in iv.head_set() or ()) if not isinstance(iv, Compose) else first == 1
    runs = []
    hook = model3.gpt_neox.layers[0].mlp.register_forward_hook(lambda *a: runs.append(1))  # inside the layer
    reused = measure(model3, tokenizer, few, intervention=iv, progress=False)  # computes the intact layers
    runs.clear()
    again = measure(model3, tokenizer, few, intervention=iv, progress=False)
    assert not runs  # layer 0 skipped in every batch: its MLP never ran
    monkeypatch.setattr(extract, "REUSE_BYTES", 0)  # too little memory allowed: every layer computed
    full = measure(model3, tokenizer, few, intervention=iv, progress=False)
    assert runs
    hook.remove()
    for name in ("distances", "heads"):
        pd.testing.assert_frame_equal(reused[name], full[name], check_exact=True)
        pd.testing.assert_frame_equal(again[name], full[name], check_exact=True)


def test_first_layer_of_every_kind():
    assert [iv.first_layer(6) for iv in (NoOp(), HeadAblation(None), HeadAblation(()), EdgeKnockout(None),
                                         QKEdit(((4, 1), (3, 0))), Compose(()))] == [0, 0, 6, 0, 3, 6]


def test_conditions_and_fingerprints_are_derived_from_the_spec():
    specs = [NoOp(), HeadAblation(((0, 0),)), HeadAblation(((0, 0),), "mean"), HeadAblation(((0, 1),)),
             HeadAblation(((0, 0),), "resample", seed=1), HeadAblation(((0, 0),), "resample", seed=2),
             EdgeKnockout(None), EdgeKnockout(None, mode="post"), EdgeKnockout(None, edges="random", seed=1),
             QKEdit(((0, 0),)), QKEdit(((0, 0),), "copy", source_step=1), Compose((NoOp(), HeadAblation(((0, 0),))))]
    conds = [s.condition for s in specs]
    assert len(set(conds)) == len(conds)
    assert HeadAblation([(2, 1), (0, 3), (2, 1)]).condition == HeadAblation(((0, 3), (2, 1))).condition
    assert heads_of([[1, 2]]) == ((1, 2),)
    with pytest.raises(ValueError):
        HeadAblation(((0, 0),), "shuffle")
    with pytest.raises(ValueError):
        QKEdit(((0, 0),), "copy")
    with pytest.raises(ValueError, match="do not exist"):
        HeadAblation(((7, 0),)).validate(3, 4)


def test_sites_are_checked_live(model3):
    check_sites(Sites(nnsight.NNsight(model3), model3))
    good = SITE_MAPS["gpt_neox"]
    SITE_MAPS["gpt_neox"] = SiteMap(**{**good.__dict__, "attention_call": r"no_such_op_\d+"})
    try:
        with pytest.raises(SiteError, match="no operation matches"):
            check_sites(Sites(nnsight.NNsight(model3), model3))
    finally:
        SITE_MAPS["gpt_neox"] = good
    model3.config._attn_implementation = "sdpa"  # a fused kernel: no probabilities to edit
    with pytest.raises(SiteError):
        check_sites(Sites(nnsight.NNsight(model3), model3))


def test_sweep_stores_each_intervention_under_its_own_condition(tmp_path, tokenizer, few):
    from lexprobe.checkpoints.hubcache import add_revision
    from lexprobe.checkpoints.suites import hub_cache
    from lexprobe.store.results import ResultsStore
    from lexprobe.sweep.run import extract

    d = tmp_path / "hub"
    for step in (0, 1, 2):
        add_revision(d, "lexprobe-test/neox", f"step{step}", tiny_model(len(tokenizer), seed=step), tokenizer)
    suite = hub_cache(d, "lexprobe-test/neox", name="t")
    ivs = [INTACT, NoOp(), HeadAblation(((1, 0),)), QKEdit(((0, 1),), "copy", source_step=0)]
    cfg = ExtractConfig(save_embeddings=False)
    status = extract(suite, few, steps=(1, 2), root=tmp_path / "r", config=cfg, conditions=ivs, progress=False)
    assert (status["status"] == "measured").sum() == 8
    again = extract(suite, few, steps=(1, 2), root=tmp_path / "r", config=cfg, conditions=ivs, progress=False)
    assert (again["status"] == "cached").all()
    store = ResultsStore(tmp_path / "r")
    intact = store.load("distances", condition="intact")
    for iv in ivs[1:]:
        got = store.load("distances", condition=iv.condition)
        side = store.units("distances", condition=iv.condition)[0][1]
        assert side["intervention"] == iv.spec()
        same = np.allclose(got["distance"], intact["distance"], atol=0)
        assert same == isinstance(iv, NoOp), iv.condition
    # copying step 0's Q/K into step 1 equals nothing when the donor is the checkpoint itself
    self_copy = QKEdit(((0, 1),), "copy", source_step=1)
    extract(suite, few, steps=(1,), root=tmp_path / "r", config=cfg, conditions=[self_copy], progress=False)
    np.testing.assert_array_equal(store.load("distances", condition=self_copy.condition)["distance"],
                                  store.load("distances", condition="intact", step=1)["distance"])


def test_a_measured_model_is_freed_with_its_last_reference(tokenizer, few):
    """Sites bound to a model must not keep it alive (a sweep holds at most two models, not every one it saw)."""
    import gc
    import weakref

    model = tiny_model(len(tokenizer), seed=7, layers=2)
    measure(model, tokenizer, few, ExtractConfig(save_embeddings=False), HeadAblation(((0, 1),), "mean"),
            progress=False)
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None
