"""Altair charts (each function returns an ``alt.Chart``); :func:`save` exports SVG/PNG/PDF/HTML offline."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd

from lexprobe.render import EMBED_OPTIONS, enable_offline

enable_offline()  # charts must show in JupyterLab with no network (see lexprobe.render)

STEP_AXIS = alt.Axis(title="training step + 1 (log scale)", format="~s")


def performance_chart(best: pd.DataFrame, inflection: pd.DataFrame | None = None, onset: int | None = None,
                      score: str = "r2") -> alt.LayerChart:
    """Best-layer performance per checkpoint on a log step axis, one line per seed, inflection CI shaded."""
    d = best.assign(step1=best["step"] + 1, seed=best["seed"].astype(str))
    base = alt.Chart(d).encode(
        x=alt.X("step1:Q", scale=alt.Scale(type="log"), axis=STEP_AXIS),
        y=alt.Y(f"{score}:Q", title="best-layer R²" if score == "r2" else score),
        color=alt.Color("seed:N", title="seed"),
    )
    layers: list[alt.Chart] = [base.mark_line(point=True).encode(
        tooltip=["model", "seed", "step", alt.Tooltip(f"{score}:Q", format=".3f"), "best_layer"])]
    if inflection is not None and len(inflection):
        inf = inflection.assign(seed=inflection["seed"].astype(str), lo=inflection["ci_low_step"] + 1,
                                hi=inflection["ci_high_step"] + 1, bp=inflection["breakpoint_step"] + 1)
        shaded = inf.dropna(subset=["lo", "hi"])
        if len(shaded):
            layers.insert(0, alt.Chart(shaded).mark_rect(opacity=0.15).encode(
                x="lo:Q", x2="hi:Q", color=alt.Color("seed:N"),
                tooltip=["seed", alt.Tooltip("ci_low_step:Q", format=",.0f"),
                         alt.Tooltip("ci_high_step:Q", format=",.0f")]))
        layers.append(alt.Chart(inf).mark_rule(strokeDash=[2, 2]).encode(
            x="bp:Q", color=alt.Color("seed:N"), tooltip=["seed", alt.Tooltip("breakpoint_step:Q", format=",.0f")]))
    if onset is not None:
        layers.append(alt.Chart(pd.DataFrame({"x": [onset + 1], "label": ["planted onset"]})).mark_rule(
            color="black", strokeDash=[6, 3]).encode(x="x:Q", tooltip=["label"]))
    return alt.layer(*layers).properties(width=520, height=280, title="Disambiguation across training")


def layer_chart(perf: pd.DataFrame, score: str = "r2") -> alt.Chart:
    """Performance per layer x checkpoint (mean over seeds): where in depth, and when, senses separate."""
    d = perf.groupby(["step", "layer"], as_index=False)[score].mean()
    return alt.Chart(d).mark_rect().encode(
        x=alt.X("step:O", title="training step"), y=alt.Y("layer:O", sort="descending", title="layer (0 = embeddings)"),
        color=alt.Color(f"{score}:Q", scale=alt.Scale(scheme="viridis"), title=score),
        tooltip=["step", "layer", alt.Tooltip(f"{score}:Q", format=".3f")],
    ).properties(width=520, height=180, title=f"{score} by layer (mean over seeds)")


def head_explorer(stats: pd.DataFrame, traj: pd.DataFrame, value: str = "r") -> alt.VConcatChart:
    """Layer x head heatmap of a head statistic; clicking a head shows its attention trajectory below."""
    sel = alt.selection_point(fields=["layer", "head"], on="click", empty=False,
                              value=_default_head(stats, value))
    heat = alt.Chart(stats).mark_rect(stroke="white").encode(
        x=alt.X("head:O"), y=alt.Y("layer:O", sort="descending"),
        color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme="redblue", domainMid=0, reverse=True)),
        opacity=alt.condition(sel, alt.value(1.0), alt.value(0.55)),
        tooltip=["layer", "head", alt.Tooltip("r:Q", format=".2f"), alt.Tooltip("q:Q", format=".3g"),
                 alt.Tooltip("q_logstep:Q", format=".3g"), alt.Tooltip("q_prev:Q", format=".3g"), "passes"],
    ).add_params(sel).properties(width=220, height=220, title=f"head statistic: {value} (click a head)")
    marks = alt.Chart(stats[stats["passes"]]).mark_text(text="★", color="black").encode(
        x="head:O", y=alt.Y("layer:O", sort="descending"))
    # inline values: a big suite (154 steps x many heads) would exceed altair's 5000-row guard, and the chart
    # needs every head's trajectory for the click-through
    wide = traj[["step", "layer", "head", "cue_attn", "prev_attn"]].assign(step1=traj["step"] + 1)
    line = alt.Chart(alt.InlineData(values=wide.to_dict("records"))).transform_fold(
        ["cue_attn", "prev_attn"], as_=["attention", "value"]).mark_line(point=True).encode(
        x=alt.X("step1:Q", scale=alt.Scale(type="log"), axis=STEP_AXIS),
        y=alt.Y("value:Q", title="mean attention"), color=alt.Color("attention:N"),
        tooltip=["layer:O", "head:O", "step:Q", "attention:N", alt.Tooltip("value:Q", format=".3f")],
    ).transform_filter(sel).properties(width=420, height=220, title="selected head across training")
    return alt.vconcat(alt.layer(heat, marks), line)


def _default_head(stats: pd.DataFrame, value: str) -> list[dict]:
    top = stats.sort_values(value, ascending=False).iloc[0]
    return [{"layer": int(top["layer"]), "head": int(top["head"])}]


def attention_tokens(tokens: list[str], weights: list[float], target: list[int], cue: list[int],
                     title: str = "") -> alt.Chart:
    """Attention from the target word to each token of one sentence; cue and target tokens highlighted."""
    role = ["cue" if i in cue else "target" if i in target else "other" for i in range(len(tokens))]
    shown = [t.replace("\u0120", "\u2423") for t in tokens]  # show the leading space as a visible mark
    d = pd.DataFrame({"pos": range(len(tokens)), "token": [f"{i}:{t}" for i, t in enumerate(shown)],
                      "attention": weights, "role": role})
    return alt.Chart(d).mark_bar().encode(
        x=alt.X("token:N", sort=alt.SortField("pos"), title="token (position:text)"),
        y=alt.Y("attention:Q", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("role:N", scale=alt.Scale(domain=["cue", "target", "other"],
                                                   range=["#d62728", "#1f77b4", "#999999"])),
        tooltip=["token", "role", alt.Tooltip("attention:Q", format=".3f")],
    ).properties(width=360, height=180, title=title)


def save(chart: alt.TopLevelMixin, path: str | Path) -> Path:
    """Save offline: .svg/.png/.pdf through vl-convert, .html with inlined scripts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".html":
        chart.save(str(path), inline=True, embed_options=EMBED_OPTIONS)
    else:
        chart.save(str(path))
    return path
