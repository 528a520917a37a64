"""Every intervention kind on every family (GPT-NeoX, GPT-2, Llama with grouped-query attention, OLMo, OLMo-2),
against hand computations written here with plain torch hooks, one sentence at a time and with no cache: module
paths spelled out per family below, independently of lexprobe's site table; attention recomputed by a hand-written
function in place of the family's eager attention."""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_tables

from lexprobe.analysis.patchmaps import CLEAN, CORRUPT
from lexprobe.base.view import Text
from lexprobe.checkpoints.shapes import family_config, random_model
from lexprobe.engine.extract import ExtractConfig, measure
from lexprobe.engine.interventions import EdgeKnockout, HeadAblation, Intervention, QKEdit
from lexprobe.engine.patches import Patch, PatchRunner, PatchWarning, counterfactual_pairs
from lexprobe.engine.reference import measure_reference
from lexprobe.engine.sites import Refused, SiteError, Sites, site_map
from lexprobe.report.causal_report import patching_blocks
from lexprobe.stages.patching import patch_design
from lexprobe.stimuli.align import align

FAMILIES = ("gpt_neox", "gpt2", "llama", "olmo", "olmo2")
# per family, written out by hand: the decoder layers, and per layer the module whose input is the heads' outputs
LAYERS = {"gpt_neox": "gpt_neox.layers", "gpt2": "transformer.h", "llama": "model.layers", "olmo": "model.layers",
          "olmo2": "model.layers"}
OUT_PROJ = {"gpt_neox": "attention.dense", "gpt2": "attn.c_proj", "llama": "self_attn.o_proj",
            "olmo": "self_attn.o_proj", "olmo2": "self_attn.o_proj"}
HD = 8  # head dim of the tiny models: hidden 32, 4 heads
TOL = 1e-5


def get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def layers_of(model, arch: str):
    return get(model, LAYERS[arch])


def family_model(arch: str, vocab: int, seed: int = 0):
    model = random_model(family_config(arch, vocab, 32, 3, 4, positions=128), seed)
    if arch == "gpt2":  # the hand computations below run GPT-2's plain eager path (see test_gpt2_upcast_path...)
        for block in model.transformer.h:
            block.attn.reorder_and_upcast_attn = False
    return model


@pytest.fixture(params=FAMILIES)
def arch(request):
    return request.param


@pytest.fixture()
def fmodel(arch, tokenizer):
    return family_model(arch, len(tokenizer))


def compare(engine: dict, hand: dict, atol: float = TOL) -> None:
    """The engine's heads and distances tables equal the hand computation's within ``atol``."""
    assert_same_tables(engine, hand, atol)


@contextmanager
def hooks(model, arch: str, replace: Callable[[int, int, torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Forward pre-hooks on every layer's output projection: ``replace(sentence, layer, x)`` returns its new input;
    the sentence counter advances with each forward pass of the model (one sentence per pass)."""
    state = {"sentence": -1}
    handles = [model.register_forward_pre_hook(lambda m, a: state.__setitem__("sentence", state["sentence"] + 1))]
    for i, layer in enumerate(layers_of(model, arch)):
        handles.append(get(layer, OUT_PROJ[arch]).register_forward_pre_hook(
            lambda m, args, i=i: (replace(state["sentence"], i, args[0].clone()),)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def hand_attention(model, arch: str, probs_edit: Callable[[int, int, torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """The family's eager attention replaced by one written here: causal softmax(Q K^T * scaling) V, with
    ``probs_edit(sentence, layer, scores) -> probs`` deciding the probabilities from the (H, q, k) scores."""
    module = importlib.import_module(type(model).__module__)
    state = {"sentence": -1}

    def attention(mod, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        scores = (query[0] @ key[0].transpose(1, 2)).float() * scale
        n = scores.shape[-1]
        scores = scores.masked_fill(~torch.tril(torch.ones(n, n, dtype=torch.bool)), -math.inf)
        probs = probs_edit(state["sentence"], mod.layer_idx, scores).to(value.dtype)
        return (probs @ value[0]).transpose(0, 1)[None].contiguous(), probs[None]

    original = module.eager_attention_forward
    handle = model.register_forward_pre_hook(lambda m, a: state.__setitem__("sentence", state["sentence"] + 1))
    module.eager_attention_forward = attention
    try:
        yield
    finally:
        module.eager_attention_forward = original
        handle.remove()


def positions(tokenizer, few) -> list[tuple[list[int], list[int]]]:
    """(target token indices, cue token indices) of each sentence, in the stimuli's order."""
    out = []
    for r in few.sentences.itertuples(index=False):
        _, t_idx, c_idx, _ = align(tokenizer, r.sentence, r.string, r.cue)
        out.append((list(t_idx), list(c_idx)))
    return out


def engine(model, tokenizer, few, iv: Intervention | None = None, **kw) -> dict:
    return measure(model, tokenizer, few, intervention=iv, progress=False, **kw)


def test_engine_intact_equals_reference(fmodel, tokenizer, few):
    compare(engine(fmodel, tokenizer, few), measure_reference(fmodel, tokenizer, few))


def test_zero_ablation_by_hand(fmodel, arch, tokenizer, few):
    heads = ((1, 2), (2, 0))

    def zero(sentence: int, layer: int, x: torch.Tensor) -> torch.Tensor:
        for l, h in heads:
            if l == layer:
                x[..., h * HD:(h + 1) * HD] = 0
        return x

    with hooks(fmodel, arch, zero):
        hand = measure_reference(fmodel, tokenizer, few)
    compare(engine(fmodel, tokenizer, few, HeadAblation(heads)), hand)


def captured_outputs(model, arch: str, tokenizer, few) -> list[dict[int, torch.Tensor]]:
    """Per sentence, per layer: the heads' outputs (tokens, H * head_dim), by hand."""
    got: list[dict[int, torch.Tensor]] = []

    def keep(sentence: int, layer: int, x: torch.Tensor) -> torch.Tensor:
        if sentence == len(got):
            got.append({})
        got[sentence][layer] = x[0].clone()
        return x

    with hooks(model, arch, keep):
        measure_reference(model, tokenizer, few)
    return got


def test_mean_and_resample_by_hand(fmodel, arch, tokenizer, few):
    layer, head = 1, 3
    cols = slice(head * HD, (head + 1) * HD)
    outs = captured_outputs(fmodel, arch, tokenizer, few)
    mean = torch.cat([o[layer][:, cols] for o in outs]).mean(0)

    def put_mean(sentence: int, l: int, x: torch.Tensor) -> torch.Tensor:
        if l == layer:
            x[..., cols] = mean
        return x

    with hooks(fmodel, arch, put_mean):
        hand = measure_reference(fmodel, tokenizer, few)
    compare(engine(fmodel, tokenizer, few, HeadAblation(((layer, head),), "mean")), hand)

    rs = HeadAblation(((layer, head),), "resample", seed=3)
    lengths = np.array([len(o[layer]) for o in outs])
    donors = rs.donors(lengths, few.sentences["word"].to_numpy())  # the spec's pairing; the values taken by hand

    def put_donor(sentence: int, l: int, x: torch.Tensor) -> torch.Tensor:
        if l == layer:
            src = outs[donors[sentence]][layer]
            pos = torch.clamp(torch.arange(x.shape[1]), max=len(src) - 1)
            x[0, :, cols] = src[pos][:, cols]
        return x

    with hooks(fmodel, arch, put_donor):
        hand = measure_reference(fmodel, tokenizer, few)
    compare(engine(fmodel, tokenizer, few, rs), hand)


@pytest.mark.parametrize("mode", ["pre", "post"])
def test_edge_knockout_by_hand(fmodel, arch, tokenizer, few, mode):
    heads = ((0, 1), (2, 3))
    pos = positions(tokenizer, few)

    def cut(sentence: int, layer: int, scores: torch.Tensor) -> torch.Tensor:
        edges = torch.zeros_like(scores, dtype=torch.bool)
        t_idx, c_idx = pos[sentence]
        for l, h in heads:
            if l == layer:
                edges[h, torch.tensor(t_idx)[:, None], torch.tensor(c_idx)[None, :]] = True
        if mode == "pre":
            return torch.softmax(scores.masked_fill(edges, -math.inf), -1)
        return torch.softmax(scores, -1).masked_fill(edges, 0.0)

    with hand_attention(fmodel, arch, cut):
        hand = measure_reference(fmodel, tokenizer, few)
    compare(engine(fmodel, tokenizer, few, EdgeKnockout(heads, mode=mode)), hand)


def test_qk_zero_by_hand_or_refused(fmodel, arch, tokenizer, few):
    heads = ((1, 2), (2, 1))
    iv = QKEdit(heads)
    before = {k: v.clone() for k, v in fmodel.state_dict().items()}
    if arch == "olmo2":
        with pytest.raises(Refused, match="normalises Q and K over all heads together"):
            engine(fmodel, tokenizer, few, iv)
        assert all(torch.equal(v, before[k]) for k, v in fmodel.state_dict().items())
        return

    def uniform(sentence: int, layer: int, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores, -1)
        n = scores.shape[-1]
        for l, h in heads:
            if l == layer:  # zero queries and keys: zero scores, uniform attention over the causal window
                probs[h] = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
        return probs

    with hand_attention(fmodel, arch, uniform):
        hand = measure_reference(fmodel, tokenizer, few)
    compare(engine(fmodel, tokenizer, few, iv), hand)
    assert all(torch.equal(v, before[k]) for k, v in fmodel.state_dict().items())  # weights restored


def copy_by_hand(model, donor, arch: str, layer: int, head: int) -> None:
    """Copy one head's Q and K weights (and biases) from ``donor`` into ``model``, indices written per family."""
    src, dst = layers_of(donor, arch)[layer], layers_of(model, arch)[layer]
    q, k = slice(head * HD, (head + 1) * HD), slice(32 + head * HD, 32 + (head + 1) * HD)
    with torch.no_grad():
        if arch == "gpt_neox":  # packed per head as [Q | K | V] rows
            rows = slice(head * 3 * HD, head * 3 * HD + 2 * HD)
            for name in ("attention.query_key_value.weight", "attention.query_key_value.bias"):
                get(dst, name)[rows] = get(src, name)[rows]
        elif arch == "gpt2":  # Conv1D (in, out): all Q columns, then all K columns
            for cols in (q, k):
                dst.attn.c_attn.weight[:, cols] = src.attn.c_attn.weight[:, cols]
                dst.attn.c_attn.bias[cols] = src.attn.c_attn.bias[cols]
        else:
            for name in ("q_proj", "k_proj"):
                get(dst, f"self_attn.{name}").weight[q] = get(src, f"self_attn.{name}").weight[q]


def test_qk_copy_by_hand_or_refused(arch, tokenizer, few):
    model, donor = family_model(arch, len(tokenizer)), family_model(arch, len(tokenizer), seed=7)
    iv = QKEdit(((1, 2),), "copy", source_step=1)
    weights = Sites(None, donor).qk_weights({1})
    if arch in ("llama", "olmo2"):
        with pytest.raises(Refused, match="grouped-query" if arch == "llama" else "all heads together"):
            engine(model, tokenizer, few, iv, donor=weights)
        return
    got = engine(model, tokenizer, few, iv, donor=weights)
    copy_by_hand(model, donor, arch, 1, 2)
    compare(got, measure_reference(model, tokenizer, few))


def test_batched_equals_unbatched_on_every_kind(fmodel, arch, tokenizer, few):
    kinds: list[Intervention | None] = [None, HeadAblation(((1, 3), (2, 0)), "mean"),
                                        HeadAblation(((1, 3),), "resample", seed=2), EdgeKnockout(None),
                                        EdgeKnockout(((2, 1),), mode="post")]
    if arch != "olmo2":
        kinds.append(QKEdit(((0, 2),)))
    for iv in kinds:
        one = engine(fmodel, tokenizer, few, iv, config=ExtractConfig(batch_size=1))
        many = engine(fmodel, tokenizer, few, iv, config=ExtractConfig(batch_size=64))
        compare(one, many, atol=TOL)


def patched_by_hand(model, arch: str, tokenizer, real: pd.Series, other: pd.Series, patch: Patch) -> torch.Tensor:
    """Target embedding (L+1, d) of the run sentence under ``patch`` over full sentences, one at a time (no cache)."""
    (ids_real, t_real, _, _), (ids_cf, t_cf, _, _) = (align(tokenizer, s.sentence, s.string, s.cue)
                                                      for s in (real, other))
    # GPT-2's positions are learned: the counterfactual runs moved so that its target sits where the real one does
    shift = t_real[0] - t_cf[0] if arch == "gpt2" else 0
    pos_real, pos_cf = torch.arange(len(ids_real))[None], torch.arange(len(ids_cf))[None] + shift
    (ids_r, t_run, pos_r), (ids_s, t_src, pos_s) = ((ids_real, t_real, pos_real), (ids_cf, t_cf, pos_cf))[
        :: 1 if patch.direction == "noise" else -1]
    captured: dict[int, torch.Tensor] = {}

    def keep(sentence: int, layer: int, x: torch.Tensor) -> torch.Tensor:
        captured[layer] = x[0, list(t_src)].clone()
        return x

    with hooks(model, arch, keep), torch.no_grad():
        model(input_ids=torch.tensor([ids_s]), position_ids=pos_s)
    n_layers = len(layers_of(model, arch))
    chosen = [(l, h) for l in range(n_layers) for h in range(4)] if patch.heads is None else patch.heads

    def put(sentence: int, layer: int, x: torch.Tensor) -> torch.Tensor:
        for l, h in chosen:
            if l == layer:
                x[0, list(t_run), h * HD:(h + 1) * HD] = captured[layer][:, h * HD:(h + 1) * HD]
        return x

    with hooks(model, arch, put), torch.no_grad():
        out = model(input_ids=torch.tensor([ids_r]), position_ids=pos_r, output_hidden_states=True)
    return torch.stack([h[0, list(t_run)].mean(0) for h in out.hidden_states])


PATCHES = [Patch(((1, 2),), "noise"), Patch(((0, 1),), "denoise"), Patch(((0, 3), (2, 1)), "denoise"),
           Patch(None, "noise"), Patch((), "denoise")]


def test_patching_by_hand_prefix_cached_and_exact(fmodel, arch, tokenizer, few, cf):
    runner = PatchRunner(fmodel, tokenizer, few, cf, batch_size=5)  # prefix-cached, batched
    real_rows, cf_rows, _ = counterfactual_pairs(few, cf)

    def start(s: pd.Series) -> int:
        return align(tokenizer, s.sentence, s.string, s.cue)[1][0]

    moved = [start(few.sentences.iloc[r]) != start(cf.sentences.iloc[j]) for r, j in zip(real_rows, cf_rows)
             if r in runner.rows]
    assert any(moved) and len(runner.rows) >= len(few.sentences) // 4  # targets at other positions are patched too
    emb = runner.embeddings(PATCHES)
    for p in PATCHES:
        for i in np.linspace(0, len(runner.rows) - 1, 4).astype(int):
            j = cf_rows[list(real_rows).index(runner.rows[i])]
            want = patched_by_hand(fmodel, arch, tokenizer, few.sentences.iloc[runner.rows[i]], cf.sentences.iloc[j], p)
            torch.testing.assert_close(emb[p.name][i], want, atol=TOL, rtol=0, msg=f"{arch} {p.name}, row {i}")
    d = runner.distances(list(patch_design(3, 4))).pivot_table(index=["pair_id", "layer"], columns="patch",
                                                               values="distance")
    assert (d["denoise-all"] - d[CLEAN]).abs().max() <= TOL  # denoising every head restores the clean run
    assert (d["noise-all"] - d[CORRUPT]).abs().max() <= TOL  # noising every head gives the counterfactual run
    assert (d["noise-all"] - d[CLEAN]).abs().max() > 1e-3  # and the two runs differ (the controls can fail)
    one = PatchRunner(fmodel, tokenizer, few, cf, batch_size=1).distances(PATCHES)
    np.testing.assert_allclose(one["distance"], runner.distances(PATCHES)["distance"], atol=TOL, rtol=0)


def test_gpt2_upcast_path_equals_eager_in_float32(tokenizer, few):
    """The CRFM runs set reorder_and_upcast_attn; lexprobe routes their attention through the eager function (where
    its sites are): in float32 the two agree to rounding."""
    model = random_model(family_config("gpt2", len(tokenizer), 32, 3, 4, positions=128))
    upcast = measure_reference(model, tokenizer, few)
    assert model.transformer.h[0].attn.reorder_and_upcast_attn
    plain = engine(model, tokenizer, few)  # the engine's runs go through eager attention
    compare(plain, upcast, atol=1e-6)


def test_binding_gpt2_sites_leaves_the_callers_model_as_it_was(tokenizer, few, cf):
    """Measuring a GPT-2 whose attention reorders and upcasts (the engine, then patching, whose prefixes run outside
    nnsight) turns that path off only while lexprobe runs the model: afterwards every layer's flag is the caller's
    again, and the numbers are those of the eager path (a copy with the flag off for good)."""
    config = family_config("gpt2", len(tokenizer), 32, 3, 4, positions=128)
    model, eager = random_model(config), random_model(config)
    for block in eager.transformer.h:
        block.attn.reorder_and_upcast_attn = False
    patches = [Patch(), Patch(None), Patch(((1, 2),), "denoise")]
    got, want = ({**engine(m, tokenizer, few), "patched": PatchRunner(m, tokenizer, few, cf).distances(patches)}
                 for m in (model, eager))
    assert all(block.attn.reorder_and_upcast_attn for block in model.transformer.h)
    compare(got, want, atol=0)
    pd.testing.assert_frame_equal(got["patched"], want["patched"])


def test_encoders_and_unknown_architectures_are_refused_by_name():
    from transformers import BertConfig

    with pytest.raises(SiteError, match="encoder.*causal"):
        site_map(BertConfig())
    with pytest.raises(SiteError, match="no site map for architecture 'mamba'"):
        site_map(type("C", (), {"model_type": "mamba"})())


def test_the_site_table_has_a_row_for_each_family_of_the_one_list():
    """lexprobe.base.families owns the families: the loader, the organism and the command line read it, and the
    engine's site table has exactly one row per family (and the README's family table lists them all)."""
    from lexprobe.base.families import FAMILIES as OWNED
    from lexprobe.base.paths import REPO_ROOT
    from lexprobe.cli import build_parser
    from lexprobe.engine.sites import SITE_MAPS

    assert set(OWNED) == set(SITE_MAPS) == set(FAMILIES)
    readme = (REPO_ROOT / "README.md").read_text()
    assert all(f"| `{family}` |" in readme for family in OWNED)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["organism", "train", "--arch", "mamba"])
    assert build_parser().parse_args(["organism", "train", "--arch", "olmo2"]).arch == "olmo2"


@pytest.mark.parametrize("local_arch", ["gpt2", "llama", "olmo2"])
def test_a_local_folder_of_each_family_runs_stages_1_to_5(local_arch, tmp_path, stimuli, tokenizer, monkeypatch):
    """``--suite local:PATH`` on a folder of ``stepN/`` checkpoints of GPT-2, Llama (grouped-query) or OLMo-2: every
    stage runs; what the architecture refuses is said in stage 4, and one seed skips stage 5 with its reason."""
    from lexprobe import Study
    from lexprobe.stages.registry import Skipped

    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path / "home"))
    for step in (0, 2, 4, 8):
        family_model(local_arch, len(tokenizer), seed=step).save_pretrained(tmp_path / "run" / f"step{step}")
        tokenizer.save_pretrained(tmp_path / "run" / f"step{step}")
    small = stimuli.subset(sorted(stimuli.pairs["word"].unique())[:4], name="small4")
    study = Study(f"local:{tmp_path / 'run'}", small, n_boot=10, n_perm=50, n_random=2, n_random_dev=1, map_steps=2,
                  perturb_steps=2, redundancy_steps=2, progress=False)
    assert study.inflection.best["step"].nunique() == 4
    assert len(study.discovery.stats) == 3 * 4  # one row per head of the last checkpoint's model
    assert len(study.perturbation.sets) >= 2 and study.perturbation.best["step"].max() == 8
    causal = study.causal
    exact = causal.patching.patch_exactness
    assert len(exact) == 2 and exact["exact"].all()  # the map checkpoints
    refused = set(causal.ablation.refused["method"])
    assert refused == {"llama": {"qk-copy"}, "olmo2": {"qk-zero", "qk-copy"}}.get(local_arch, set())
    assert not set(causal.ablation.design["family"]) & refused  # nothing refused was measured
    replication = study.outcome("replication")
    assert isinstance(replication, Skipped) and "seed" in replication.reason


@pytest.mark.parametrize("local_arch", ["gpt2", "gpt_neox"])
def test_stage4_records_what_patching_used(local_arch, tmp_path, stimuli, tokenizer, monkeypatch):
    """GPT-2's learned positions drop the sentences whose counterfactual prefix is longer: stage 4's exactness table
    says per checkpoint how many sentences were patched and pairs scored (what a runner on the checkpoint keeps;
    GPT-NeoX keeps every one), its view says so, the stage warns once, and a cached rerun reads the same columns."""
    from lexprobe import Study

    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path / "home"))
    for step in (0, 2, 4, 8):
        family_model(local_arch, len(tokenizer), seed=step).save_pretrained(tmp_path / "run" / f"step{step}")
        tokenizer.save_pretrained(tmp_path / "run" / f"step{step}")
    small = stimuli.subset(sorted(stimuli.pairs["word"].unique())[:4], name="small4")

    def causal():
        study = Study(f"local:{tmp_path / 'run'}", small, n_boot=10, n_perm=50, n_random=2, n_random_dev=1,
                      map_steps=2, redundancy_steps=1, methods=("zero",), progress=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = study.causal
        return got, [str(w.message) for w in caught if issubclass(w.category, PatchWarning)]

    s4, warned = causal()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PatchWarning)
        last = family_model(local_arch, len(tokenizer), seed=8)
        kept = PatchRunner(last, tokenizer, small, s4.patching.counterfactual).pairs
    (n_sentences, n_pairs), full = ((len(set(p["s1"]) | set(p["s2"])), len(p)) for p in (kept, small.pairs))
    if local_arch == "gpt2":
        assert n_pairs < full[1] and len(warned) == 1
        assert f"fewest: {n_sentences} of {full[0]} sentences patched, {n_pairs} of {full[1]} pairs scored" in warned[0]
    else:
        assert (n_sentences, n_pairs) == full and not warned
    exact = s4.patching.patch_exactness
    assert len(exact) == 2 and exact["exact"].all()
    assert (exact["n_sentences"] == n_sentences).all() and (exact["n_pairs"] == n_pairs).all()
    blocks = patching_blocks(s4.patching, None)
    line = next(b.text for b in blocks if isinstance(b, Text) and b.text.startswith("Counterf"))
    assert f"; {n_sentences} sentences patched, {n_pairs} pairs scored." in line
    again, warned = causal()  # from the stage cache
    pd.testing.assert_frame_equal(again.patching.patch_exactness, exact)
    assert not warned
