"""The planted-circuit organism: the training mask cuts exactly the noun->cue edges of the non-designated heads,
and the construct check and validity tables compute what they say on hand-made tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_model

from lexprobe.analysis.validity import construct_check, first_significant, validity
from lexprobe.checkpoints.bpe import train_tokenizer
from lexprobe.checkpoints.suites import load_checkpoint
from lexprobe.organism.corpus import Corpus, CorpusConfig, load_lexicon
from lexprobe.organism.planted import closed_heads, planted_forward
from lexprobe.organism.profiles import PROFILES, Plant, Profile
from lexprobe.organism.suite import ensure_trained, suite_dir
from lexprobe.organism.train import batch, packed

OPEN = ((0, 1), (2, 3))  # designated heads of the tiny model (3 layers x 4 heads)
MICRO = Profile("micro-planted", seeds=(0,), total_steps=4, onset=2, checkpoint_every=4, batch_size=4, seq_len=24,
                vocab_size=300, tokenizer_sentences=400, warmup=2, hidden_size=32, layers=3, heads=4,
                corpus=CorpusConfig(onset=2), plant=Plant())
MICRO_PLAIN = dataclasses.replace(MICRO, plant=None)


def _edges(b: int = 2, t: int = 10) -> torch.Tensor:
    """Hand-made noun->cue pairs: a noun at 5-6 whose cue is 3-4 (row 0), a noun at 8 whose cue is 2 (row 1)."""
    cut = torch.zeros(b, t, t, dtype=torch.bool)
    cut[0, 5:7, 3:5] = True
    cut[1, 8, 2] = True
    return cut


@pytest.fixture()
def planted_model():
    return tiny_model(60, layers=3, heads=4)


def test_closed_heads_give_exactly_zero_attention_to_the_cut_edges(planted_model):
    ids = torch.randint(2, 60, (2, 10), generator=torch.Generator().manual_seed(0))
    cut, closed = _edges(), closed_heads(OPEN, 3, 4)
    with torch.no_grad():
        plain = planted_model(input_ids=ids, output_attentions=True).attentions
        att = planted_forward(planted_model, ids, cut, closed, output_attentions=True).attentions
    for layer in range(3):
        for head in range(4):
            a = att[layer][:, head]
            if (layer, head) in OPEN:
                assert (a[cut] > 0).all()  # designated heads keep the edges
            else:
                assert (a[cut] == 0).all()
    # layer 0 sees the same input either way: open heads are untouched, closed heads renormalise only cut rows
    p0, a0 = plain[0], att[0]
    assert torch.equal(a0[:, 1], p0[:, 1])
    rows = cut.any(-1)  # (b, q): query rows with a cut edge
    for head in (0, 2, 3):
        assert torch.equal(a0[:, head][~rows], p0[:, head][~rows])
        kept = p0[:, head].masked_fill(cut, 0.0)
        torch.testing.assert_close(a0[:, head][rows], (kept / kept.sum(-1, keepdim=True))[rows])


def test_without_noun_or_cue_positions_the_masked_forward_is_the_plain_one(planted_model):
    ids = torch.randint(2, 60, (2, 10), generator=torch.Generator().manual_seed(1))
    none = torch.zeros(2, 10, 10, dtype=torch.bool)
    with torch.no_grad():
        plain = planted_model(input_ids=ids, output_hidden_states=True)
        masked = planted_forward(planted_model, ids, none, closed_heads(OPEN, 3, 4), output_hidden_states=True)
        cut = planted_forward(planted_model, ids, _edges(), closed_heads(OPEN, 3, 4))
    assert torch.equal(masked.logits, plain.logits)
    assert all(torch.equal(a, b) for a, b in zip(masked.hidden_states, plain.hidden_states))
    assert not torch.equal(cut.logits, plain.logits)  # the cut is live
    assert planted_model.config._attn_implementation == "eager"  # switched back after the planted forward


def test_packed_edges_run_from_each_nouns_tokens_to_its_own_cues_tokens():
    lexicon = load_lexicon()
    corpus = Corpus(lexicon, MICRO.corpus)
    tok = train_tokenizer(corpus.texts(np.random.default_rng(0), 4, 400), MICRO.vocab_size)
    noun_only = dataclasses.replace(MICRO, plant=Plant(readers="noun"))
    ids, cut, _ = packed(tok, corpus, noun_only, seed=0, step=3)
    ids_all, cut_all, _ = packed(tok, corpus, MICRO, seed=0, step=3)
    assert torch.equal(ids, ids_all) and torch.equal(ids, packed(tok, corpus, MICRO_PLAIN, 0, 3)[0])
    assert torch.equal(ids, batch(tok, corpus, MICRO, 0, 3))  # the token block alone, its edges not built
    nouns = {n.word for n in lexicon.nouns}
    cues = {c for n in lexicon.nouns for s in n.senses for c in s.cues}
    assert cut.any()
    for r, q, k in cut.nonzero().tolist():
        assert k < q
        assert tok.decode(ids[r, q]).strip() in "".join(nouns) and any(tok.decode(ids[r, k]).strip() in c for c in cues)
        assert tok.eos_token_id not in ids[r, k:q].tolist()  # the same sentence
    # readers="sentence": the noun's edges and those of every later token of the sentence, to the same cue tokens
    assert (cut_all | cut).equal(cut_all) and cut_all.sum() > cut.sum()
    for r, q, k in cut_all.nonzero().tolist():
        assert k < q and tok.eos_token_id not in ids[r, k:q + 1].tolist()
    assert torch.equal(cut_all.any(1), cut.any(1))  # the same keys: the cues' tokens


def test_plant_draws_heads_in_distinct_layers_by_seed():
    plant = Plant()
    heads = [plant.heads(s, 6, 4) for s in range(5)]
    assert all(len({layer for layer, _ in h}) == 2 for h in heads)
    assert heads == [plant.heads(s, 6, 4) for s in range(5)]  # deterministic
    assert len(set(heads)) > 1  # depends on the seed
    with pytest.raises(ValueError, match="distinct layers"):
        Plant(n_heads=7).heads(0, 6, 4)
    with pytest.raises(ValueError, match="readers"):
        Plant(readers="everyone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="leak_penalty -1"):
        Plant(leak_penalty=-1)


def test_default_profiles_keep_their_fingerprints():
    """Adding plants left the unplanted profiles' fingerprints (so their trained suites) as they were."""
    lexicon = load_lexicon()
    assert suite_dir(PROFILES["default"]).name == "default-10d26e58b68c677b"
    assert suite_dir(PROFILES["smoke"]).name == "smoke-fb4664d9747843e3"
    unplanted = dataclasses.replace(PROFILES["planted"], plant=None, name="default")
    assert unplanted.fingerprint(lexicon) == PROFILES["default"].fingerprint(lexicon)
    assert PROFILES["planted"].fingerprint(lexicon) != PROFILES["default"].fingerprint(lexicon)


def test_planted_suite_saves_ordinary_checkpoints_and_records_its_heads(tmp_path, monkeypatch):
    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path))
    suite = ensure_trained(MICRO, progress=False, workers=1)
    assert suite.metadata["planted_heads"] == {"0": [list(h) for h in MICRO.planted_heads(0)]}
    ld = load_checkpoint(suite.checkpoint(suite.models[0], 0, 4))
    assert ld.model.config._attn_implementation == "eager"  # loaded for measurement like any checkpoint


def _best(seed: int, intact: float, planted: float, others: float, step: int = 8) -> list[dict]:
    early = {"model": "m", "seed": seed, "step": 1, "condition": "planted", "r2": 0.0}  # not the last checkpoint
    return [early] + [{"model": "m", "seed": seed, "step": step, "condition": c, "r2": v}
                      for c, v in (("intact", intact), ("planted", planted), ("others", others))]


def test_construct_check_shares_and_thresholds():
    best = pd.DataFrame(_best(0, 0.5, 0.1, 0.45) + _best(1, 0.5, 0.11, 0.45) + _best(2, 0.4, 0.0, 0.3))
    c = construct_check(best).set_index("seed")
    assert c.loc[0, "removed_planted"] == pytest.approx(0.8) and c.loc[0, "removed_others"] == pytest.approx(0.1)
    assert c.loc[0, "step"] == 8
    assert list(c["passes"]) == [True, False, False]  # seed 1 removes 78%; seed 2's others remove 25%
    with pytest.raises(ValueError, match="others"):
        construct_check(best[best["condition"] != "others"])


def _map(rows: list[tuple[int, int, int, int, bool]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["seed", "step", "layer", "head", "significant"]).assign(model="m")


PLANTED = pd.DataFrame([("m", 0, 1, 2), ("m", 0, 3, 0), ("m", 1, 0, 1), ("m", 1, 4, 3)],
                       columns=["model", "seed", "layer", "head"])


def test_validity_precision_and_recall_by_hand():
    causal = _map([(0, 1, 1, 2, True),  # an early checkpoint: ignored by validity
                   (0, 8, 1, 2, True), (0, 8, 3, 0, False), (0, 8, 2, 2, True), (0, 8, 5, 1, True),
                   (1, 8, 0, 1, False), (1, 8, 4, 3, False)])
    passes = _map([(0, 8, 1, 2, True), (0, 8, 3, 0, True), (1, 8, 4, 3, True), (1, 8, 2, 0, True)])
    v = validity({"causal": causal, "passes": passes}, PLANTED).set_index(["method", "seed"])
    # seed 0, causal: found L1H2 L2H2 L5H1, one planted -> precision 1/3, recall 1/2
    assert v.loc[("causal", 0), "precision"] == pytest.approx(1 / 3)
    assert v.loc[("causal", 0), "recall"] == pytest.approx(1 / 2)
    assert v.loc[("causal", 0), "found_heads"] == "L1H2 L2H2 L5H1"
    # seed 1, causal: nothing found -> precision undefined, recall 0
    assert np.isnan(v.loc[("causal", 1), "precision"]) and v.loc[("causal", 1), "recall"] == 0
    # pooled over seeds: 1 true positive of 3 found and 4 planted
    assert v.loc[("causal", "all"), "precision"] == pytest.approx(1 / 3)
    assert v.loc[("causal", "all"), "recall"] == pytest.approx(1 / 4)
    # passes: seed 0 both found, nothing else (1, 1); seed 1 one of two found, one extra (1/2, 1/2); pooled 3/4, 3/4
    assert (v.loc[("passes", 0), "precision"], v.loc[("passes", 0), "recall"]) == (1.0, 1.0)
    assert (v.loc[("passes", 1), "precision"], v.loc[("passes", 1), "recall"]) == (0.5, 0.5)
    assert (v.loc[("passes", "all"), "precision"], v.loc[("passes", "all"), "recall"]) == (0.75, 0.75)
    with pytest.raises(ValueError, match="significant"):
        validity({"bad": causal.drop(columns="significant")}, PLANTED)


def test_first_significant_step_of_each_planted_head():
    causal = _map([(0, 1, 1, 2, False), (0, 4, 1, 2, True), (0, 8, 1, 2, True),
                   (0, 1, 3, 0, False), (0, 4, 3, 0, False), (0, 8, 3, 0, False),
                   (1, 1, 0, 1, True), (1, 8, 0, 1, False)])
    f = first_significant({"causal": causal}, PLANTED).set_index(["seed", "layer", "head"])
    assert f.loc[(0, 1, 2), "first_significant_step"] == 4 and f.loc[(0, 1, 2), "significant_at"] == 2
    assert np.isnan(f.loc[(0, 3, 0), "first_significant_step"])
    assert f.loc[(1, 0, 1), "first_significant_step"] == 1
    assert f.loc[(0, 1, 2), "detected_from_step"] == 4  # significant from step 4 to the last
    assert np.isnan(f.loc[(1, 0, 1), "detected_from_step"])  # significant at step 1, not at the last
    assert f.loc[(1, 4, 3), "checkpoints"] == 0  # a planted head the map never measured


def test_planted_profile_follows_smoke_mode(monkeypatch):
    from lexprobe.organism.suite import get_profile

    monkeypatch.setenv("LEXPROBE_SMOKE", "1")
    assert get_profile("planted").name == "planted-smoke" and get_profile(None).name == "smoke"
    assert get_profile("default").name == "default"
    monkeypatch.setenv("LEXPROBE_SMOKE", "0")
    assert get_profile("planted").name == "planted"


def test_leak_is_the_closed_heads_unmasked_attention_mass_on_the_cut_edges(planted_model):
    """The penalty term, by hand: each closed head's plain (unmasked) attention on the cut keys, summed over its
    query rows with a cut edge; collecting it changes nothing in the masked forward pass; its gradient reaches the
    queries and keys and not what feeds no attention (the last layer's output projection)."""
    from lexprobe.organism.planted import mean_leak

    ids = torch.randint(2, 60, (2, 10), generator=torch.Generator().manual_seed(2))
    cut, closed = _edges(), closed_heads(OPEN, 3, 4)
    leak: list = []
    with torch.no_grad():
        plain = planted_model(input_ids=ids, output_attentions=True).attentions
        masked = planted_forward(planted_model, ids, cut, closed)
        with_leak = planted_forward(planted_model, ids, cut, closed, leak=leak)
    assert torch.equal(with_leak.logits, masked.logits)
    rows = int(cut.any(-1).sum())  # query rows with a cut edge, per head
    assert [n for _, n in leak] == [rows * 3, rows * 4, rows * 3]  # closed heads per layer: 3, 4, 3
    # layer 0 sees the same input with or without the cut: its leak is the plain attention on the cut edges
    by_hand = sum(float((plain[0][:, head] * cut).sum()) for head in range(4) if (0, head) not in OPEN)
    assert float(leak[0][0]) == pytest.approx(by_hand, rel=1e-6)
    assert float(mean_leak(leak)) == pytest.approx(sum(float(m) for m, _ in leak) / (rows * 10), rel=1e-6)
    assert 0 < float(mean_leak(leak)) < 1
    planted_model.zero_grad()
    leak = []
    planted_forward(planted_model, ids, cut, closed, leak=leak)
    mean_leak(leak).backward()
    layers = planted_model.gpt_neox.layers
    assert layers[0].attention.query_key_value.weight.grad.abs().sum() > 0
    last = layers[2].attention.dense.weight.grad
    assert last is None or float(last.abs().sum()) == 0.0


def test_greedy_sets_become_a_head_map_that_validity_reads():
    from lexprobe.stages.validation import greedy_map

    stats = pd.DataFrame([("m", sd, layer, head) for sd in (0, 1) for layer in range(5) for head in range(4)],
                         columns=["model", "seed", "layer", "head"])
    greedy = pd.DataFrame([("m", 0, 8, "L1H2 L2H2"), ("m", 1, 8, "L0H1"), ("m", 1, 2, "")],
                          columns=["model", "seed", "step", "set"])
    g = greedy_map(stats, greedy)
    assert len(g) == 3 * 20  # every head at every greedy checkpoint
    named = g[g["significant"]]
    assert set(zip(named["seed"], named["step"], named["layer"], named["head"])) == {
        (0, 8, 1, 2), (0, 8, 2, 2), (1, 8, 0, 1)}
    v = validity({"greedy": g}, PLANTED).set_index(["method", "seed"])
    assert (v.loc[("greedy", 0), "precision"], v.loc[("greedy", 0), "recall"]) == (0.5, 0.5)  # L1H2 of L1H2 L3H0
    assert (v.loc[("greedy", 1), "precision"], v.loc[("greedy", 1), "recall"]) == (1.0, 0.5)  # L0H1 of L0H1 L4H3
    assert greedy_map(stats, greedy.iloc[:0]).empty


def _cue_attention(model, closed: torch.Tensor) -> torch.Tensor:
    """(b, layers, heads): whether each sequence's cut edges get any attention in each head under ``closed``."""
    ids = torch.randint(2, 60, (2, 10), generator=torch.Generator().manual_seed(1))
    cut = _edges()
    with torch.no_grad():
        att = planted_forward(model, ids, cut, closed, output_attentions=True).attentions
    return torch.stack([torch.stack([(att[la][b, h][cut[b]] > 0).all() for la in range(3) for h in range(4)])
                        for b in range(2)]).reshape(2, 3, 4)


def test_a_staggered_plant_cuts_a_head_before_its_opening_step_and_no_edge_after(planted_model):
    from lexprobe.organism.planted import closed_at

    rng = np.random.default_rng(0)
    for step, expected_open in ((0, {OPEN[0]}), (9, {OPEN[0]}), (10, set(OPEN)), (400, set(OPEN))):
        closed = closed_at(OPEN, (0, 10), False, step, 2, 3, 4, rng)
        reach = _cue_attention(planted_model, closed)
        for b in range(2):  # exactly the open designated heads reach the cue, in every sequence
            assert {(la, h) for la in range(3) for h in range(4) if reach[b, la, h]} == expected_open, step


def test_an_or_plant_leaves_exactly_one_designated_head_open_per_sequence(planted_model):
    from lexprobe.organism.planted import closed_at

    closed = closed_at(OPEN, (), True, 5, 400, 3, 4, np.random.default_rng(3))
    open_per_row = (~closed).reshape(400, -1).sum(1)
    assert (open_per_row == 1).all()
    picks = {tuple(int(i) for i in torch.nonzero(~closed[r])[0]) for r in range(400)}
    assert picks == set(OPEN)  # each designated head is the open one in some sequences, no other head ever
    share = float((~closed[:, OPEN[0][0], OPEN[0][1]]).float().mean())
    assert 0.4 < share < 0.6
    reach = _cue_attention(planted_model, closed[:2])
    assert (reach.reshape(2, -1).sum(1) == 1).all()  # in the model too: one head reaches the cue per sequence


def test_an_or_plants_leak_penalises_only_the_never_open_heads(planted_model):
    from lexprobe.organism.planted import closed_at

    ids = torch.randint(2, 60, (2, 10), generator=torch.Generator().manual_seed(2))
    now = closed_at(OPEN, (), True, 0, 2, 3, 4, np.random.default_rng(0))
    never = closed_heads(OPEN, 3, 4)
    leak: list = []
    with torch.no_grad():
        planted_forward(planted_model, ids, _edges(), now, leak=leak, penalized=now & never[None])
    rows = int(_edges().any(-1).sum())  # query rows with a cut edge, over both sequences
    assert sum(n for _, n in leak) == rows * 10  # the 10 never-open heads, not the closed designated one


def test_timed_and_or_plants_are_checked_and_keep_the_original_plants_fingerprint():
    with pytest.raises(ValueError, match="one step"):
        Plant(opens=(0,))
    with pytest.raises(ValueError, match="mode"):
        Plant(mode="some")  # type: ignore[arg-type]
    lexicon = load_lexicon()
    planted = PROFILES["planted"]
    assert planted.plant is not None and planted.plant.plain
    assert planted.fingerprint(lexicon) == "e58c5727ed15ffb2"  # the original plant's suites are found, not retrained
    assert len({PROFILES[n].fingerprint(lexicon) for n in ("planted", "planted-staggered", "planted-or",
                                                           "planted-single")}) == 4


@pytest.mark.parametrize("scores,expected,certified", [
    # (intact, planted cut, others cut, every head cut, cut A, alone A, cut B, alone B)
    ((1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0), "single", {(1, 0)}),  # A carries alone, B adds nothing
    ((1.0, 0.0, 1.0, 0.0, 1.0, 0.9, 1.0, 0.9), "OR", {(1, 0), (3, 2)}),  # each alone suffices, neither is needed
    ((1.0, 0.0, 1.0, 0.0, 0.1, 0.1, 0.1, 0.1), "AND", {(1, 0), (3, 2)}),  # each needed, neither suffices
    ((1.0, 0.95, 0.05, 0.0, 0.95, 0.05, 0.95, 0.05), "none", set()),  # the planted set carries nothing
    ((1.0, 1.0, 1.0, 0.98, 1.0, 1.0, 1.0, 1.0), "none", set()),  # no head's edges carry anything (untrained)
])
def test_the_per_head_construct_check_reads_what_each_planted_head_carries(scores, expected, certified):
    from lexprobe.analysis.validity import per_head_check

    names = ("intact", "planted", "others", "all", "cut:L1H0", "alone:L1H0", "cut:L3H2", "alone:L3H2")
    best = pd.DataFrame({"model": "m", "seed": 0, "step": 512, "condition": names, "r2": scores})
    planted = pd.DataFrame({"model": "m", "seed": 0, "layer": [1, 3], "head": [0, 2]})
    got = per_head_check(best, planted)
    assert set(got["reading"]) == {expected}
    assert {(r.layer, r.head) for r in got.itertuples() if r.certified} == certified
    if scores[3] == 0.0:  # shares of what the edges carry: with every cut at 0, plain shares of the intact R^2
        a = got.set_index(["layer", "head"]).loc[(1, 0)]
        assert a["removed_when_cut"] == pytest.approx(1 - scores[4]) and a["kept_alone"] == pytest.approx(scores[5])


def test_a_single_planted_head_is_checked_with_the_sets_own_cuts():
    from lexprobe.analysis.validity import per_head_check
    from lexprobe.stages.validation import construct_knockouts

    planted = pd.DataFrame({"model": "m", "seed": 0, "layer": [1], "head": [0]})
    cuts = construct_knockouts(planted, 3, 4)["m", 0]
    assert set(cuts) == {"planted", "others", "all"}  # no per-head duplicates of the set's conditions
    assert len({iv.condition for iv in cuts.values()}) == 3
    best = pd.DataFrame({"model": "m", "seed": 0, "step": 512, "condition": ["intact", "planted", "others", "all"],
                         "r2": [1.0, 0.05, 0.97, 0.0]})
    got = per_head_check(best, planted).iloc[0]
    assert got["reading"] == "single" and got["certified"]
    assert got["removed_when_cut"] == pytest.approx(0.95) and got["kept_alone"] == pytest.approx(0.97)


def test_decoys_attend_along_their_own_edges_the_noun_to_its_cue_or_to_the_token_before_it():
    lexicon = load_lexicon()
    corpus = Corpus(lexicon, MICRO.corpus)
    tok = train_tokenizer(corpus.texts(np.random.default_rng(0), 4, 400), MICRO.vocab_size)
    lured = dataclasses.replace(MICRO, plant=Plant(readers="noun", decoys=("inert", "previous")))
    ids, cut, pulls = packed(tok, corpus, lured, seed=0, step=3)
    assert torch.equal(ids, packed(tok, corpus, MICRO, 0, 3)[0]) and not packed(tok, corpus, MICRO, 0, 3)[2]
    assert torch.equal(pulls["cue"], cut)  # with noun readers, the decoys' cue edges are the planted edges
    prev = pulls["previous"]
    assert prev.any() and (prev.sum(-1) <= 1).all()  # one key per noun token
    for r, q, k in prev.nonzero().tolist():
        first = q
        while first > 0 and prev[r, first - 1].any():
            first -= 1  # the noun's first token
        assert k == first - 1  # the token just before the noun
    heads = lured.decoy_heads(0)
    assert [h[2] for h in heads] == ["inert", "previous"] and not set(h[:2] for h in heads) & set(
        lured.planted_heads(0))
    with pytest.raises(ValueError, match="decoys"):
        Plant(decoys=("loud",))
    with pytest.raises(ValueError, match="gpt_neox"):
        dataclasses.replace(lured, arch="llama")  # decoys are refused by name outside GPT-NeoX


@pytest.mark.parametrize("kind", ["inert", "constant", "previous"])
def test_a_held_decoy_writes_the_same_whatever_it_attends_to(planted_model, kind):
    """Cutting a decoy's edges (changing what it attends to) leaves the model's output unchanged: it carries
    nothing; cutting an ordinary head's changes it. The constant and previous decoys' own output is not zero."""
    from lexprobe.organism.planted import DecoyHold

    decoy = (1, 2)
    hold = DecoyHold(planted_model, ((*decoy, kind),), seed=0)
    hold.apply(planted_model)
    ids = torch.randint(2, 60, (2, 10), generator=torch.Generator().manual_seed(1))
    every = [(la, he) for la in range(3) for he in range(4)]
    decoy_cut = closed_heads(tuple(h for h in every if h != decoy), 3, 4)  # only the decoy's edges cut
    other_cut = closed_heads(tuple(h for h in every if h != (0, 1)), 3, 4)  # only an ordinary head's
    with torch.no_grad():
        plain = planted_model(input_ids=ids).logits
        cut_decoy = planted_forward(planted_model, ids, _edges(), decoy_cut).logits
        cut_other = planted_forward(planted_model, ids, _edges(), other_cut).logits
    assert torch.allclose(plain, cut_decoy, atol=1e-6) and not torch.allclose(plain, cut_other, atol=1e-4)
    _, bias, dense = DecoyHold._parts(planted_model, *decoy)
    assert (dense.abs().sum() == 0) == (kind == "inert")
    assert kind == "inert" or float((dense @ bias).norm()) > 0


def test_the_decoy_check_certifies_a_decoy_empty_only_when_it_moves_nothing_at_every_judged_step():
    from lexprobe.analysis.validity import decoy_check

    def step(n: int, decoy_cut: float, decoy_alone: float, intact: float = 1.0) -> pd.DataFrame:
        names = ("intact", "all", "cut:L1H1", "alone:L1H1", "cut:L2H0", "alone:L2H0")
        return pd.DataFrame({"model": "m", "seed": 0, "step": n, "condition": names,
                             "r2": (intact, 0.0, intact, 0.0, decoy_cut, decoy_alone)})

    best = pd.concat([step(0, 0.0, 0.5, intact=0.05), step(256, 0.99, 0.01), step(512, 0.7, 0.0)])
    decoys = pd.DataFrame({"model": "m", "seed": 0, "layer": [1, 2], "head": [1, 0], "kind": ["inert", "constant"]})
    got = decoy_check(best, decoys)
    assert not got.loc[got["step"] == 0, "judged"].any()  # before the rise the edges carry nothing to judge
    by_head = got.groupby(["layer", "head"])["certified_empty"].first()
    assert bool(by_head[1, 1]) and not bool(by_head[2, 0])  # L2H0 removes 30% when cut at step 512: it carries
    assert got.query("layer == 2 and step == 256")["empty"].item()


def test_auroc_counts_ties_against_the_method():
    from lexprobe.analysis.detection import auroc

    truth = np.array([True, False, False, False])
    assert auroc(np.array([3.0, 1, 2, 0]), truth) == 1.0
    assert auroc(np.array([1.0, 1, 1, 1]), truth) == 0.0  # a flat map gets no credit
    assert auroc(np.array([2.0, 2, 1, np.nan]), truth) == pytest.approx(2 / 3)
    assert np.isnan(auroc(np.array([1.0, 2]), np.array([False, False])))


@pytest.mark.parametrize("removed,recovered,expected", [
    ((0.05, 0.0, 0.9), (0.8, 0.7, 0.9), "OR"),  # neither noised alone matters, together they do
    ((0.8, 0.9, 0.95), (0.05, 0.1, 0.9), "AND"),  # each needed, neither alone restores
    ((0.05, 0.05, 0.9), (0.05, 0.1, 0.9), "joint"),
    ((0.5, 0.4, 0.9), (0.5, 0.4, 0.9), "additive"),
    ((0.83, 0.01, 0.83), (0.88, 0.0, 0.88), "one"),  # one carrier and a head that adds nothing
    ((0.05, 0.0, 0.1), (0.0, 0.05, 0.1), "none"),
])
def test_pair_readings(removed, recovered, expected):
    from lexprobe.stages.pairs import pair_reading

    assert pair_reading(removed, recovered) == expected


def test_patching_with_partners_names_an_or_member_the_single_maps_miss():
    from lexprobe.stages.pairs import partners_map

    grid = pd.DataFrame([{"model": "m", "seed": 0, "step": 512, "layer": la, "head": he}
                         for la in range(2) for he in range(2)])
    noise = grid.assign(significant=[True, False, False, False], share=[0.6, 0.0, 0.02, 0.01])
    denoise = grid.assign(significant=False, share=[0.3, 0.1, 0.5, 0.0])
    pairs = pd.DataFrame([{"model": "m", "seed": 0, "step": 512, "a": "L0H1", "b": "L1H0", "removed_both": 0.7,
                           "reading": "OR"}, {"model": "m", "seed": 0, "step": 512, "a": "L0H0", "b": "L1H1",
                                              "removed_both": 0.6, "reading": "additive"}])
    got = partners_map(noise, denoise, pairs).set_index(["layer", "head"])
    assert got["significant"].to_dict() == {(0, 0): True, (0, 1): True, (1, 0): True, (1, 1): False}
    assert got.loc[(0, 1), "score"] == 0.7 and got.loc[(1, 1), "score"] == 0.01
