"""ipywidgets inspectors built on :mod:`lexprobe.views.viz`."""

from __future__ import annotations

from typing import Protocol

import altair as alt
import ipywidgets as W
import pandas as pd

from lexprobe.base.heads import Head, head_name
from lexprobe.engine.interventions import KINDS, copy_source, intervention_of
from lexprobe.live import Live
from lexprobe.views.viz import STEP_AXIS, attention_tokens, lead_head


class HeadTables(Protocol):
    """What the inspectors read of head discovery (stage 2's result has both)."""

    stats: pd.DataFrame
    trajectories: pd.DataFrame


def inspector(live: Live, found: HeadTables) -> W.Widget:
    """Pick seed, checkpoint, layer, head and sentence: attention over tokens (measured live) plus that head's
    trajectory; starts on :func:`lexprobe.views.viz.lead_head` (a head that passes, if any) at the last checkpoint."""
    sents = live.stimuli.sentences
    labels = [(f"{r.sentence}  [{r.word}: sense {r.sense}, cue '{r.cue}']", r.sentence_id) for r in sents.itertuples()]
    stats = found.stats
    layers = sorted(stats["layer"].unique())
    heads = sorted(stats["head"].unique())
    top = lead_head(stats)

    def show(seed: int, step: int, layer: int, head: int, sentence_id: int) -> alt.VConcatChart:
        r = sents.set_index("sentence_id").loc[sentence_id]
        m = live.attention(seed, step, sentence_id)
        w = m["attention"][layer, head][m["target"]].mean(0).tolist()  # a numpy array
        bars = attention_tokens(m["tokens"], w, m["target"], m["cue"],
                                title=f"{head_name(layer, head)} at step {step}: attention from '{r['string']}'")
        tr = found.trajectories.query("seed == @seed and layer == @layer and head == @head").assign(
            step1=lambda d: d["step"] + 1)
        line = alt.Chart(tr).mark_line(point=True).encode(
            x=alt.X("step1:Q", scale=alt.Scale(type="log"), axis=STEP_AXIS),
            y=alt.Y("cue_attn:Q", title="mean cue attention"),
            tooltip=["step", alt.Tooltip("cue_attn:Q", format=".3f")]).properties(width=360, height=160)
        rule = alt.Chart(tr.query("step == @step")).mark_rule(color="red").encode(x="step1:Q")
        return alt.vconcat(bars, line + rule)

    return W.interactive(
        show, {"auto_display": True},  # without it interactive computes the chart but never shows it
        seed=W.Dropdown(options=live.seeds, value=int(top["seed"]), description="seed"),
        step=W.SelectionSlider(options=live.steps, value=live.steps[-1], description="step"),
        layer=W.Dropdown(options=layers, value=int(top["layer"]), description="layer"),
        head=W.Dropdown(options=heads, value=int(top["head"]), description="head"),
        sentence_id=W.Dropdown(options=labels, value=labels[0][1], description="sentence",
                               layout=W.Layout(width="640px")),
    )


def intervention_explorer(live: Live, found: HeadTables, intact: pd.DataFrame | None = None) -> W.Widget:
    """Pick an intervention kind, heads, seed and checkpoint: per-layer R^2 on the whole stimulus set, intact
    next to intervened (measured live through the engine; heads marked * pass discovery). ``intact``: the study's
    per-layer intact performance (stage 1's ``perf``), shown without loading a checkpoint; it opens on kind
    ``none`` (intact alone), so nothing is measured until a kind is picked. ``qk-copy`` copies from the suite's
    earliest checkpoint after step 0, as stage 4 does (not offered when there is none)."""
    heads = [(f"{head_name(r.layer, r.head)}{' *' if r.passes else ''}", (int(r.layer), int(r.head)))
             for r in found.stats.drop_duplicates(["layer", "head"]).sort_values(["layer", "head"]).itertuples()]
    passing = tuple(sorted({(int(r.layer), int(r.head)) for r in found.stats.itertuples() if r.passes}))
    source = copy_source(live.suite.steps)
    kinds = [name for name, k in KINDS.items() if source is not None or not k.needs_source]

    def intact_at(seed: int, step: int) -> pd.DataFrame:
        known = pd.DataFrame() if intact is None else intact[
            (intact["model"] == live.suite.models[0]) & (intact["seed"] == seed) & (intact["step"] == step)]
        return known if len(known) else live.performance(seed, step)

    def show(kind: str, chosen: tuple[Head, ...], seed: int, step: int) -> alt.Chart:
        runs = [intact_at(seed, step).assign(condition="intact")]
        if kind != "none":
            runs.append(live.performance(seed, step, intervention_of(kind, chosen, source_step=source)).assign(
                condition=kind))
        bars = alt.Chart(pd.concat(runs)[["condition", "layer", "r2", "auc"]]).mark_bar().encode(
            x=alt.X("condition:N", title=None), y=alt.Y("r2:Q", title="R²"), color="condition:N",
            column=alt.Column("layer:O", title="layer"),
            tooltip=["condition", "layer", alt.Tooltip("r2:Q", format=".4f"), alt.Tooltip("auc:Q", format=".3f")],
        ).properties(width=40, height=180, title=f"{kind} on {len(chosen)} head(s), seed {seed}, step {step}")
        return bars

    return W.interactive(
        show, {"auto_display": True},
        kind=W.Dropdown(options=kinds, value="none", description="kind"),
        chosen=W.SelectMultiple(options=heads, value=passing or (heads[0][1],), description="heads (* passes)",
                                rows=8),
        seed=W.Dropdown(options=live.seeds, description="seed"),
        step=W.SelectionSlider(options=live.steps, value=live.steps[-1], description="step"),
    )
