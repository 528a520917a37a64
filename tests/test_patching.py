"""Activation patching at the target's tokens: against hand computations with plain torch hooks on full
sentences, the exactness controls, batching, prefix caching, the counterfactual pairing, and the statistics."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_model

from lexprobe.analysis.patchmaps import CLEAN, CORRUPT, patch_maps, reading
from lexprobe.engine.extract import ExtractConfig, measure
from lexprobe.engine.patches import Patch, PatchMap, PatchRunner, PatchWarning, counterfactual_pairs
from lexprobe.stages.patching import patch_design, patch_table
from lexprobe.stimuli.align import encode
from lexprobe.stimuli.perturb import neutral
from lexprobe.sweep.run import run_fingerprint


@pytest.fixture()
def model3(tokenizer):
    return tiny_model(len(tokenizer), layers=3)


def by_hand(model, tokenizer, real: pd.Series, other: pd.Series, patch: Patch) -> torch.Tensor:
    """Target embedding (L+1, d) of the run sentence under ``patch``, from plain torch pre-hooks on each layer's
    ``attention.dense`` over the full sentences, one at a time (no cache, no nnsight)."""
    run, source = (real, other) if patch.direction == "noise" else (other, real)
    enc_run, enc_src = (encode(tokenizer, pd.DataFrame([s])) for s in (run, source))
    t_run, t_src = enc_run.target_mask[0].nonzero()[:, 0], enc_src.target_mask[0].nonzero()[:, 0]
    hd = model.config.hidden_size // model.config.num_attention_heads
    layers = model.gpt_neox.layers
    captured: dict[int, torch.Tensor] = {}
    hooks = [layers[i].attention.dense.register_forward_pre_hook(
        lambda m, args, i=i: captured.__setitem__(i, args[0][0, t_src].clone())) for i in range(len(layers))]
    with torch.no_grad():
        model.gpt_neox(input_ids=enc_src.input_ids)
    for h in hooks:
        h.remove()
    n_layers, n_heads = len(layers), model.config.num_attention_heads
    chosen = [(l, h) for l in range(n_layers) for h in range(n_heads)] if patch.heads is None else patch.heads

    def replace(i: int, args: tuple) -> tuple:
        x = args[0].clone()
        for layer, head in chosen:
            if layer == i:
                x[0, t_run, head * hd:(head + 1) * hd] = captured[i][:, head * hd:(head + 1) * hd]
        return (x,)

    hooks = [layers[i].attention.dense.register_forward_pre_hook(lambda m, args, i=i: replace(i, args))
             for i in range(n_layers)]
    try:
        with torch.no_grad():
            out = model.gpt_neox(input_ids=enc_run.input_ids, output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack([h[0, t_run].mean(0) for h in out.hidden_states])


PATCHES = [Patch(((1, 2),), "noise"), Patch(((0, 1),), "denoise"), Patch(((0, 0), (0, 1), (0, 2), (0, 3)), "noise"),
           Patch(((0, 3), (2, 1)), "denoise"), Patch(None, "noise"), Patch((), "denoise")]


def test_patched_runs_equal_hand_computation_on_full_sentences(model3, tokenizer, few, cf):
    runner = PatchRunner(model3, tokenizer, few, cf, batch_size=5)
    emb = runner.embeddings(PATCHES)
    real_rows, cf_rows, _ = counterfactual_pairs(few, cf)
    pick = np.linspace(0, len(runner.rows) - 1, 6).astype(int)
    for p in PATCHES:
        for i in pick:
            j = cf_rows[list(real_rows).index(runner.rows[i])]
            want = by_hand(model3, tokenizer, few.sentences.iloc[runner.rows[i]], cf.sentences.iloc[j], p)
            torch.testing.assert_close(emb[p.name][i], want, atol=2e-5, rtol=0, msg=f"{p.name}, row {i}")
    # a patch changes the run it patches (the check can fail)
    assert not torch.allclose(emb["noise-l1h2"], emb["noise-all"], atol=1e-4)


def test_exactness_controls(model3, tokenizer, few, cf):
    runner = PatchRunner(model3, tokenizer, few, cf)
    d = runner.distances(list(patch_design(3, 4))).pivot_table(index=["pair_id", "layer"], columns="patch",
                                                               values="distance")
    assert (d["denoise-all"] - d[CLEAN]).abs().max() <= 1e-6
    assert (d["noise-all"] - d[CORRUPT]).abs().max() <= 1e-6
    assert (d["noise-all"] - d[CLEAN]).abs().max() > 1e-3  # the counterfactual differs from the clean run
    intact = measure(model3, tokenizer, few, ExtractConfig(save_embeddings=False), progress=False)["distances"]
    intact = intact.set_index(["pair_id", "layer"])["distance"].reindex(d.index)
    assert (d[CLEAN] - intact).abs().max() <= 1e-6  # no patch = the engine's intact run, prefix cached or not
    cf_run = measure(model3, tokenizer, cf, ExtractConfig(save_embeddings=False), progress=False)["distances"]
    cf_run = cf_run.merge(cf.pairs[["pair_id", "source_pair_id"]], on="pair_id").set_index(
        ["source_pair_id", "layer"])["distance"]
    cf_run.index.names = ["pair_id", "layer"]
    assert (d[CORRUPT] - cf_run.reindex(d.index)).abs().max() <= 1e-6


def test_batched_equals_unbatched_and_grouping_does_not_matter(model3, tokenizer, few, cf, monkeypatch):
    one = PatchRunner(model3, tokenizer, few, cf, batch_size=1).distances(PATCHES)
    many = PatchRunner(model3, tokenizer, few, cf, batch_size=64)
    monkeypatch.setattr(PatchRunner, "group_size", lambda self, side: 2)  # patches in several forwards
    grouped = many.distances(PATCHES)
    monkeypatch.setattr("lexprobe.engine.patches.DISTANCE_BYTES", 1)  # one patch's distances at a time
    one_at_a_time = many.distances(PATCHES)
    monkeypatch.undo()
    together = many.distances(PATCHES)
    pd.testing.assert_frame_equal(one_at_a_time, together)
    for other in (grouped, together):
        np.testing.assert_allclose(one["distance"], other["distance"], atol=1e-6, rtol=0)
        assert (one["patch"] == other["patch"]).all() and (one["pair_id"] == other["pair_id"]).all()


def test_sentences_without_counterfactual_are_dropped_with_a_count(model3, tokenizer, few, cf):
    fewer = type(cf)(cf.name, cf.pairs, cf.sentences.iloc[2:].reset_index(drop=True), cf.hash + "x")
    with pytest.warns(PatchWarning, match=r"dropped 2 of \d+ sentences"):
        runner = PatchRunner(model3, tokenizer, few, fewer)
    missing = set(few.sentences["sentence_id"]) - set(fewer.sentences["source_id"])
    assert missing and not missing & set(runner.sentence_ids.tolist())
    assert not runner.pairs["s1"].isin(missing).any() and not runner.pairs["s2"].isin(missing).any()
    none = type(cf)(cf.name, cf.pairs, cf.sentences.assign(source_id=-1), cf.hash + "y")
    with pytest.raises(ValueError, match="no sentence has a counterfactual"):
        PatchRunner(model3, tokenizer, few, none)


def test_a_patch_listed_twice_is_refused(model3, tokenizer, few, cf):
    """Embeddings are kept by patch name: a patch listed twice would append each batch twice (scrambled rows)."""
    runner = PatchRunner(model3, tokenizer, few, cf, batch_size=5)
    assert len(runner.batches) > 1  # with several batches the repeat scrambled sentences silently
    twice = [Patch(((1, 2),), "noise"), Patch((), "denoise"), Patch(((1, 2),), "noise"), Patch((), "denoise"),
             Patch(((2, 1), (0, 3)), "denoise"), Patch(((0, 3), (2, 1)), "denoise")]  # equal values, any order
    for call in (runner.embeddings, runner.distances):
        with pytest.raises(ValueError, match="list each patch once") as err:
            call(twice)
        assert all(n in str(err.value) for n in ("noise-l1h2", "denoise-none", "denoise-l0h3+l2h1"))
    once = runner.embeddings(twice[:2])
    assert set(once) == {"noise-l1h2", "denoise-none"}


def test_a_counterfactual_set_with_a_repeated_source_id_is_refused(model3, tokenizer, few, cf, monkeypatch):
    """Two counterfactual sentences claiming one real sentence are refused by name, value and rows, before any
    encoding (the pairing kept the last one silently)."""
    sentences = cf.sentences.copy()
    sid = int(sentences["source_id"].iloc[0])
    sentences.iloc[3, sentences.columns.get_loc("source_id")] = sid
    twice = type(cf)(cf.name, cf.pairs, sentences, cf.hash + "d")
    with pytest.raises(ValueError, match=re.escape(repr(cf.name)) + rf".*source_id {sid} at rows \[0, 3\]"):
        counterfactual_pairs(few, twice)
    import lexprobe.engine.patches as patches

    def no_encoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("encoded before the refusal")

    monkeypatch.setattr(patches, "encode", no_encoding)
    with pytest.raises(ValueError, match="source_id repeats"):
        PatchRunner(model3, tokenizer, few, twice)


def test_patch_names_conditions_and_fingerprints(few, cf, tokenizer):
    design = patch_design(3, 4)
    assert len({p.name for p in design}) == len(design) == 2 * (2 + 3 + 12)
    a, b = PatchMap(cf, design), PatchMap(cf, design[:-1])
    assert a.condition != b.condition and a.condition == PatchMap(cf, design).condition
    other = neutral(few, seed=1, tokenizer=tokenizer)
    assert PatchMap(other, design).condition != a.condition  # another counterfactual, another condition
    from lexprobe.organism.suite import organism_suite

    suite = organism_suite("smoke")
    assert run_fingerprint(suite, few, ExtractConfig(), a) != run_fingerprint(suite, few, ExtractConfig(), b)
    with pytest.raises(ValueError, match="source_id"):
        PatchMap(few, design)
    with pytest.raises(ValueError, match="repeat"):
        PatchMap(cf, (Patch(((0, 1),)), Patch(((0, 1),))))
    tab = patch_table(design, 4)
    assert set(tab["unit"]) == {"none", "all", "layer", "head"} and (tab["unit"] == "head").sum() == 24


def _pairs(effect_of: dict[str, float], n_words: int = 12, seed: int = 0) -> pd.DataFrame:
    """Pair distances at one checkpoint and two layers: under each patch, same-sense pairs are closer by
    ``effect_of[patch]`` (plus noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for w in range(n_words):
        for k in range(6):
            same = k % 2 == 0
            noise = rng.normal(0, 0.05, 2)
            for name, sep in effect_of.items():
                for layer in (0, 1):
                    rows.append({"condition": name, "model": "m", "seed": 0, "step": 10, "layer": layer,
                                 "word": f"w{w}", "pair_key": w * 10 + k, "pair_id": w * 10 + k, "same": same,
                                 "mean_relatedness": np.nan,
                                 "distance": 0.5 - (sep * layer if same else 0) + noise[layer]})
    return pd.DataFrame(rows)


def test_patch_maps_flag_the_head_that_carries_the_signal():
    design = (Patch(((0, 0),), "noise"), Patch(((0, 1),), "noise"), Patch(((0, 0),), "denoise"),
              Patch(((0, 1),), "denoise"))
    tab = pd.concat([patch_table(design, 2), pd.DataFrame([{"name": CLEAN, "direction": "noise", "unit": "none",
                                                             "layer": -1, "head": -1},
                                                            {"name": CORRUPT, "direction": "denoise", "unit": "none",
                                                             "layer": -1, "head": -1}])])
    pairs = _pairs({CLEAN: 0.3, CORRUPT: 0.0, "noise-l0h0": 0.0, "noise-l0h1": 0.3, "denoise-l0h0": 0.3,
                    "denoise-l0h1": 0.0})
    m = patch_maps(pairs, tab, n_boot=200).set_index("patch")
    assert m.loc["noise-l0h0", "significant"] and not m.loc["noise-l0h1", "significant"]
    assert m.loc["denoise-l0h0", "significant"] and not m.loc["denoise-l0h1", "significant"]
    assert m.loc["denoise-l0h0", "share"] == pytest.approx(1.0, abs=0.05)
    assert m.loc["noise-l0h0", "fdr_family_size"] == 2  # BH within (model, seed, direction, unit)
    # a counterfactual whose distances are all equal: baseline R^2 0, said so, shares still defined
    flat = pairs.copy()
    flat.loc[flat["condition"] == CORRUPT, "distance"] = 0.5
    f = patch_maps(flat, tab, n_boot=50).set_index("patch")
    assert f["baseline_constant"].all() and f.loc["denoise-l0h0", "r2_counterfactual"] == 0.0
    assert np.isfinite(f.loc["denoise-l0h0", "share"])


def test_reading_of_a_sufficient_set():
    h1, h2 = (0, 0), (1, 0)
    assert reading({h1: 0.9, h2: 0.85}, {h1: 0.05, h2: 0.02}, 0.95, 0.6) == "OR"
    assert reading({h1: 0.1, h2: 0.2}, {h1: 0.5, h2: 0.55}, 0.9, 0.6) == "AND"
    assert reading({h1: 0.9, h2: 0.1}, {h1: 0.5, h2: 0.0}, 0.9, 0.6) == "mixed"
    assert reading({h1: 0.1, h2: 0.2}, {h1: 0.05, h2: 0.1}, 0.9, 0.6) == "distributed"
    assert reading({}, {}, 0.0, 0.0) == "none"


def test_greedy_sets_are_searched_from_each_seeds_onset_on():
    """Before its onset a seed's clean run beats the counterfactual by noise: nothing to recover, no greedy search."""
    from types import SimpleNamespace

    from lexprobe.stages.patching import greedy_steps

    steps = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    s1 = SimpleNamespace(steps=steps, suite=SimpleNamespace(models=("m",), seeds=(0, 1)),
                         inflection=pd.DataFrame({"model": ["m", "m"], "seed": [0, 1], "onset_step": [100.0, np.nan]}))
    got = greedy_steps(s1, 3)
    assert min(got["m", 0]) >= 100 and got["m", 0][-1] == 512 and len(got["m", 0]) == 3
    assert got["m", 1] == (512,)  # no onset: the last checkpoint alone


@pytest.mark.parametrize("tie", [0.0, None])
def test_greedy_ties_are_broken_by_layer_not_by_rounding(monkeypatch, tie):
    """Heads above the layer read out score exactly what the set without them scores; two heads below score 1e-12
    above or below that, as rounding (a batch size, a device) may have it. Exact ties only: rounding picks the set.
    With the tolerance: one set, the same under both roundings."""
    from lexprobe.stages import patching

    heads = [(layer, h) for layer in range(3) for h in range(2)]
    alone = {(0, 0): 0.3, (0, 1): 0.2}

    def scorer(jitter: float):
        def scores(runner, scoring, patches):
            out = {}
            for p in patches:
                if p.heads == ():
                    out[p.name] = 1.0 if p.direction == "noise" else 0.0
                    continue
                s = set(p.heads)
                r2 = sum(alone.get(h, 0.0) for h in s) + (0.4 if {(1, 0), (1, 1)} <= s else 0.0)
                out[p.name] = r2 + jitter * len(s & {(1, 0), (1, 1)})  # rounding of the heads that can matter
            return out
        return scores

    if tie is not None:
        monkeypatch.setattr(patching, "TIE", tie)
    sets = []
    for jitter in (1e-12, -1e-12):
        monkeypatch.setattr(patching, "patch_scores", scorer(jitter))
        curve, chosen, clean, cf = patching.greedy_set(None, None, heads)
        assert (clean, cf) == (1.0, 0.0) and curve[-1]["recovered"] >= patching.RECOVER
        sets.append(chosen)
    if tie == 0.0:  # the fragility the tolerance removes
        assert sets[0] == ((0, 0), (0, 1), (1, 0), (1, 1)) and len(sets[1]) == 6
    else:
        assert sets[0] == sets[1] == ((0, 0), (0, 1), (1, 0), (1, 1))
