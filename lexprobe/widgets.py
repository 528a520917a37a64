"""ipywidgets inspectors built on :mod:`lexprobe.viz`."""

from __future__ import annotations

from functools import lru_cache

import altair as alt
import ipywidgets as W
import torch

from lexprobe.align import align
from lexprobe.stages import Stage1, Stage2
from lexprobe.suites import Checkpoint, Loaded, load_checkpoint
from lexprobe.viz import STEP_AXIS, attention_tokens


@lru_cache(maxsize=1)
def _loaded(ck: Checkpoint) -> Loaded:
    """Keep only the most recently inspected checkpoint in memory."""
    return load_checkpoint(ck)


def sentence_attention(ld: Loaded, sentence: str, target: str, cue: str, layer: int, head: int) -> tuple:
    """Tokens, the head's attention from the target (mean over its tokens) to every token, target and cue indices."""
    ids, t_idx, c_idx, toks = align(ld.tokenizer, sentence, target, cue)
    with torch.inference_mode():
        att = ld.model(input_ids=torch.tensor([ids]), output_attentions=True).attentions[layer][0, head]
    return toks, att[t_idx].mean(0).tolist(), t_idx, c_idx


def inspector(s1: Stage1, s2: Stage2) -> W.Widget:
    """Pick seed, checkpoint, layer, head and sentence: attention over tokens plus that head's trajectory."""
    sents = s1.stimuli.sentences
    labels = [(f"{r.sentence}  [{r.word}: sense {r.sense}, cue '{r.cue}']", r.sentence_id) for r in sents.itertuples()]
    layers = sorted(s2.stats["layer"].unique())
    heads = sorted(s2.stats["head"].unique())
    top = s2.stats.sort_values("q").iloc[0]

    def show(seed: int, step: int, layer: int, head: int, sentence_id: int) -> alt.VConcatChart:
        r = sents.set_index("sentence_id").loc[sentence_id]
        ld = _loaded(s1.suite.checkpoint(s1.suite.models[0], seed, step))
        toks, w, t_idx, c_idx = sentence_attention(ld, r["sentence"], r["string"], r["cue"], layer, head)
        bars = attention_tokens(toks, w, t_idx, c_idx, title=f"L{layer}H{head} at step {step}: attention from "
                                                              f"'{r['string']}'")
        tr = s2.trajectories.query("seed == @seed and layer == @layer and head == @head").assign(
            step1=lambda d: d["step"] + 1)
        line = alt.Chart(tr).mark_line(point=True).encode(
            x=alt.X("step1:Q", scale=alt.Scale(type="log"), axis=STEP_AXIS), y=alt.Y("cue_attn:Q", title="mean cue attention"),
            tooltip=["step", alt.Tooltip("cue_attn:Q", format=".3f")]).properties(width=360, height=160)
        rule = alt.Chart(tr.query("step == @step")).mark_rule(color="red").encode(x="step1:Q")
        return alt.vconcat(bars, line + rule)

    return W.interactive(
        show, {"auto_display": True},  # without it interactive computes the chart but never shows it
        seed=W.Dropdown(options=sorted(s1.best["seed"].unique()), value=int(top["seed"]), description="seed"),
        step=W.SelectionSlider(options=sorted(s1.best["step"].unique()), value=int(s1.best["step"].max()),
                               description="step"),
        layer=W.Dropdown(options=layers, value=int(top["layer"]), description="layer"),
        head=W.Dropdown(options=heads, value=int(top["head"]), description="head"),
        sentence_id=W.Dropdown(options=labels, value=labels[0][1], description="sentence",
                               layout=W.Layout(width="640px")),
    )
