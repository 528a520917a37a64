"""Altair charts (each function returns an ``alt.Chart``); :func:`save` exports SVG/PNG/PDF/HTML offline.

Charts render in JupyterLab with no network: importing this module enables the ``lexprobe`` renderer of
:mod:`lexprobe.views.offline` (``alt.renderers.enable(...)`` afterwards overrides it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

from lexprobe.analysis.primitives import at_last_checkpoint
from lexprobe.views.offline import EMBED_OPTIONS, enable_offline

enable_offline()  # charts must show in JupyterLab with no network

STEP_AXIS = alt.Axis(title="training step + 1 (log scale)", format="~s")


def series_color(field: str) -> alt.Color:
    """One colour per value of a nominal ``field``, with a legend of solid swatches; every layer of a chart uses this
    same encoding: Vega-Lite merges a layered chart's legends, and a layer's ``legend: null`` would cancel the legend
    another layer asks for (leaving only a console warning)."""
    return alt.Color(f"{field}:N", title=field, legend=alt.Legend(symbolOpacity=1))


SCORE_TITLES = {"r2": "best-layer R²", "r2_signed": "best-layer signed R²", "auc": "best-layer AUC"}


def performance_chart(best: pd.DataFrame, inflection: pd.DataFrame | None = None, onset: int | None = None,
                      score: str = "r2", fitted: pd.DataFrame | None = None) -> alt.LayerChart | alt.FacetChart:
    """Best-layer performance per checkpoint on a log step axis, one line per seed; with an inflection table, each
    seed's onset of the rise (dotted rule) and its profile interval (shaded); with ``fitted`` (columns model, seed,
    step, fitted), the chosen curve model as a thin line."""
    d = best.assign(step1=best["step"] + 1, seed=best["seed"].astype(str))
    title = SCORE_TITLES.get(score, score)
    color = series_color("seed")
    base = alt.Chart(d).encode(x=alt.X("step1:Q", scale=alt.Scale(type="log"), axis=STEP_AXIS),
                               y=alt.Y(f"{score}:Q", title=title), color=color)
    layers: list[alt.Chart] = [base.mark_line(point=True, opacity=0.6).encode(
        tooltip=["model", "seed", "step", alt.Tooltip(f"{score}:Q", format=".3f"), "best_layer"])]
    notes = ["lines: best-layer score per checkpoint"]
    if fitted is not None and len(fitted):
        f = fitted.assign(step1=fitted["step"] + 1, seed=fitted["seed"].astype(str))
        layers.append(alt.Chart(f).mark_line(strokeWidth=2.5).encode(
            x="step1:Q", y=alt.Y("fitted:Q"), color=color, detail="model:N",
            tooltip=["model", "seed", "curve_model", alt.Tooltip("fitted:Q", format=".3f")]))
        notes.append("thick: the fitted curve model")
    if inflection is not None and len(inflection):
        inf = inflection.assign(seed=inflection["seed"].astype(str), lo=inflection["onset_low_step"] + 1,
                                hi=inflection["onset_high_step"] + 1, on=inflection["onset_step"] + 1)
        tips = ["seed", "curve_model", "shape", alt.Tooltip("onset_step:Q", format=",.0f"),
                alt.Tooltip("onset_low_step:Q", format=",.0f"), alt.Tooltip("onset_high_step:Q", format=",.0f")]
        shaded = inf.dropna(subset=["lo", "hi"])
        if len(shaded):
            layers.insert(0, alt.Chart(shaded).mark_rect(opacity=0.15).encode(
                x="lo:Q", x2="hi:Q", color=color, tooltip=tips))
            notes.append("shaded: each seed's onset interval (profile likelihood)")
        layers.append(alt.Chart(inf.dropna(subset=["on"])).mark_rule(strokeDash=[2, 2]).encode(
            x="on:Q", color=color, tooltip=tips))
        notes.append("dotted: its onset")
    if onset is not None:
        planted = pd.DataFrame({"x": [onset + 1], "label": [f"corpus onset (step {onset})"]})
        layers.append(alt.Chart(planted).mark_rule(color="black", strokeDash=[6, 3]).encode(x="x:Q", tooltip=["label"]))
        layers.append(alt.Chart(planted).mark_text(align="left", dx=3, baseline="top", fontSize=10).encode(
            x="x:Q", y=alt.value(2), text="label:N"))
        notes.append("black dashed: the corpus onset")
    return alt.layer(*layers).properties(width=520, height=280, title=alt.TitleParams(
        "Disambiguation across training", subtitle="; ".join(notes)))


def suites_chart(bests: dict[str, pd.DataFrame], score: str = "r2") -> alt.Chart:
    """Best-layer performance of several suites on one axis of tokens seen (log), one line per suite and seed:
    ``bests`` maps a suite's name to its stage-1 ``best`` table, which has a ``tokens`` column where the suite's
    revision names give them (OLMo, OLMo-2)."""
    lacking = [name for name, b in bests.items() if "tokens" not in b.columns or b["tokens"].isna().all()]
    if lacking:
        raise ValueError(f"suites without tokens seen per step: {', '.join(lacking)} (their revision names do not "
                         "give them)")
    d = pd.concat([b.assign(suite=name, seed=b["seed"].astype(str)) for name, b in bests.items()], ignore_index=True)
    d = d[d["tokens"] > 0]  # a log axis: step 0 has seen no tokens
    return alt.Chart(d).mark_line(point=True).encode(
        x=alt.X("tokens:Q", scale=alt.Scale(type="log"), title="tokens seen (log; G = billion)",
                axis=alt.Axis(format="~s")),
        y=alt.Y(f"{score}:Q", title=SCORE_TITLES.get(score, score)), color=alt.Color("suite:N", title="suite"),
        detail="seed:N", tooltip=["suite", "seed", "step", alt.Tooltip("tokens:Q", format=".3s"),
                                  alt.Tooltip(f"{score}:Q", format=".3f")],
    ).properties(width=520, height=280, title="Disambiguation across training, suites on one tokens axis")


def layer_chart(perf: pd.DataFrame, score: str = "r2") -> alt.Chart:
    """Performance per layer x checkpoint (mean over seeds): where in depth, and when, senses separate."""
    d = perf.groupby(["step", "layer"], as_index=False)[score].mean()
    blank = sorted(int(la) for la, g in d.groupby("layer") if g[score].isna().all())
    note = (f"blank: layer {', '.join(map(str, blank))}, where the word's vectors do not vary between its sentences "
            "(the embeddings hold no context), so there is nothing to score" if blank else "")
    return alt.Chart(d).mark_rect().encode(
        x=alt.X("step:O", title="training step"), y=alt.Y("layer:O", sort="descending", title="layer (0 = embeddings)"),
        color=alt.Color(f"{score}:Q", scale=alt.Scale(scheme="viridis"), title=score),
        tooltip=["step", "layer", alt.Tooltip(f"{score}:Q", format=".3f")],
    ).properties(width=520, height=180, title=alt.TitleParams(f"{score} by layer (mean over seeds)", subtitle=note))


def head_explorer(stats: pd.DataFrame, traj: pd.DataFrame, value: str = "r") -> alt.VConcatChart:
    """Layer x head heatmap of a head statistic (★ = passes); clicking a head shows its attention trajectory below,
    starting with :func:`lead_head`."""
    top = lead_head(stats)
    sel = alt.selection_point(fields=["layer", "head"], on="click", empty=False,
                              value=[{"layer": int(top["layer"]), "head": int(top["head"])}])
    heat = alt.Chart(stats).mark_rect(stroke="white").encode(
        x=alt.X("head:O"), y=alt.Y("layer:O", sort="descending"),
        color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme="redblue", domainMid=0, reverse=True)),
        opacity=alt.condition(sel, alt.value(1.0), alt.value(0.55)),
        tooltip=["layer", "head", alt.Tooltip("r:Q", format=".2f"), alt.Tooltip("q:Q", format=".3g"),
                 alt.Tooltip("q_diff:Q", format=".3g"), alt.Tooltip("q_prev:Q", format=".3g"), "passes"],
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


def lead_head(stats: pd.DataFrame) -> pd.Series:
    """The head to show first: among heads that ``pass`` (original rule + first-difference trend control) the one
    with the smallest ``q_diff``; when none passes, the smallest ``q_diff`` overall."""
    pool = stats[stats["passes"]] if stats["passes"].any() else stats
    return pool.sort_values("q_diff", na_position="last").iloc[0]


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


COLOUR_CHANNELS = ("color", "fill", "stroke")
LEGEND_CHANNELS = (*COLOUR_CHANNELS, "shape", "size", "opacity", "fillOpacity", "strokeOpacity", "strokeDash")


def _walk(node: Any) -> Iterator[dict]:
    """Every dict inside a JSON-like tree, depth first."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _distinct_values(spec: dict, field: str) -> float:
    """How many values ``field`` takes across a Vega-Lite spec's data (named datasets and inline values); ``inf``
    where no data holds it (a transform derives it)."""
    inline = (n["values"] for n in _walk(spec) if isinstance(n.get("values"), list))
    tables = [*spec.get("datasets", {}).values(), *inline]
    values = {json.dumps(row[field]) for rows in tables for row in rows if isinstance(row, dict) and field in row}
    return len(values) if values else math.inf


def _domain_fields(domain: Any) -> list[str]:
    """The data fields a compiled Vega scale's domain reads (``{"data", "field"}`` or ``{"fields": [...]}``)."""
    return [f for d in _walk(domain) for f in [d.get("field"), *d.get("fields", [])] if isinstance(f, str)]


def colour_legends(spec: dict) -> list[tuple[str, float, bool]]:
    """Each colour scale of a Vega-Lite spec once compiled to Vega (through ``vl-convert``, the compiler the browser
    runs): its name, how many values it maps, and whether a legend draws it. The compiled spec is the one to read:
    Vega-Lite merges layers' legends there, and a layer's ``legend: null`` can cancel another layer's legend with no
    more than a console warning."""
    import vl_convert
    from altair.utils._importers import vl_version_for_vl_convert

    vega = vl_convert.vegalite_to_vega(spec, vl_version=vl_version_for_vl_convert())
    groups = [vega, *(m for m in _walk(vega.get("marks", [])) if m.get("type") == "group")]
    drawn = {legend[c] for g in groups for legend in g.get("legends", []) for c in LEGEND_CHANNELS
             if isinstance(legend.get(c), str)}
    out = []
    for scale in (s for g in groups for s in g.get("scales", []) if s["name"].split("_")[-1] in COLOUR_CHANNELS):
        domain = scale.get("domain")
        n = len(domain) if isinstance(domain, list) else max(
            (_distinct_values(spec, f) for f in _domain_fields(domain)), default=math.inf)
        out.append((scale["name"], n, scale["name"] in drawn))
    return out


def legend_problems(chart: alt.TopLevelMixin | dict) -> list[str]:
    """What a reader cannot decode: each colour scale with more than one value that no legend explains."""
    spec = chart if isinstance(chart, dict) else spec_of(chart)
    return [f"colour scale {name!r} maps {n:g} values and has no legend" for name, n, shown in colour_legends(spec)
            if n > 1 and not shown]


def _title(channel: Any) -> str | None:
    """An encoding channel's title (its field without one), or None where it has neither."""
    if not isinstance(channel, dict):
        return None
    title = channel.get("title")
    if isinstance(title, str):
        return title
    field = channel.get("field")
    return field if isinstance(field, str) else None


def text_alternative(spec: dict) -> str:
    """A chart in words, for readers who cannot see it (the figure's ``aria-label``): its title and subtitle, its
    marks, what each axis and the colour show, and how many data rows it draws."""
    top = spec.get("title")
    title = top.get("text") if isinstance(top, dict) else top
    subtitle = top.get("subtitle") if isinstance(top, dict) else None
    marks = sorted({m if isinstance(m, str) else str(m.get("type", "")) for n in _walk(spec)
                    if isinstance(m := n.get("mark"), str | dict)} - {""})
    seen: dict[str, list[str]] = {}
    for node in _walk(spec):
        enc = node.get("encoding")
        if not isinstance(enc, dict):
            continue
        for channel in ("x", "y", "color", "column", "row", "facet"):
            titled = isinstance(enc.get(channel), dict) and isinstance(enc[channel].get("title"), str)
            if (t := _title(enc.get(channel))) and t not in seen.setdefault(channel, []) and (
                    titled or not seen[channel]):  # a bare field name only where no layer titles the channel
                seen[channel].append(t)
    facet = spec.get("facet")
    if isinstance(facet, dict) and (t := _title(facet.get("column") or facet.get("row") or facet)):
        seen.setdefault("facet", []).append(t)
    rows = sum(len(v) for v in spec.get("datasets", {}).values())
    names = {"x": "x axis", "y": "y axis", "color": "colour", "column": "panels by", "row": "panels by",
             "facet": "panels by"}
    said = "; ".join(f"{names[c]}: {', '.join(t)}" for c, t in seen.items() if t)
    head = " ".join(str(t) for t in (title, subtitle) if t)
    return (f"Chart{': ' + head if head else ''}. {' and '.join(marks) or 'marks'} marks; {said}; {rows} data rows. "
            "The numbers it draws are in this section's tables.")


def spec_of(chart: alt.TopLevelMixin) -> dict:
    """A chart's Vega-Lite spec with every data row (altair's 5,000-row guard off)."""
    with alt.data_transformers.disable_max_rows():
        return chart.to_dict()


def _verdict(role: str, passes: bool) -> str:
    """A stage-3 test's outcome in words: moved cues are perturbations, the neutral word a control."""
    if role == "control":
        return "control: cue-specific" if passes else "control: not cue-specific"
    return "robust" if passes else "not robust"


def robustness_heatmap(heads: pd.DataFrame, value: str = "retained") -> alt.HConcatChart:
    """Heads x perturbations at the last checkpoint: share of intact cue attention kept (or another column), with
    the robustness test in the tooltip; discovered heads only when any are flagged."""
    last = at_last_checkpoint(heads)
    if "discovered" in last and last["discovered"].fillna(False).astype(bool).any():
        last = last[last["discovered"].fillna(False).astype(bool)]
    d = last.assign(head_id=lambda x: "s" + x["seed"].astype(str) + " L" + x["layer"].astype(str) + "H"
                    + x["head"].astype(str), robust=lambda x: [_verdict(r, p) for r, p in zip(x["role"], x["passes"])],
                    fails=lambda x: ["✗" if not p else "" for p in x["passes"].fillna(False).astype(bool)])
    tips = ["head_id", "perturbation", "test", "robust", alt.Tooltip("cue_intact:Q", format=".3f"),
            alt.Tooltip("cue_perturbed:Q", format=".3f"), alt.Tooltip("control:Q", format=".3f"),
            alt.Tooltip("q:Q", format=".3g")]
    panels = []
    for role, title, scale, legend in (
            ("perturbation", "moved cues", alt.Scale(scheme="viridis"), "cue attention kept"),
            ("control", "control", alt.Scale(scheme="greys"), "neutral / cue (low: specific)")):
        part = d[d["role"] == role]
        if part.empty:
            continue
        base = alt.Chart(part).encode(x=alt.X("perturbation:N", title=title), y=alt.Y("head_id:N", title="seed, head"))
        panels.append(alt.layer(
            base.mark_rect(stroke="white").encode(color=alt.Color(f"{value}:Q", scale=scale,
                                                                  title=legend if value == "retained" else value),
                                                  tooltip=tips),
            base.mark_text(color="#d62728", fontSize=13, fontWeight="bold").encode(text="fails:N")))
    return alt.hconcat(*panels).resolve_scale(color="independent").properties(title=alt.TitleParams(
        "Cue attention under perturbation (last checkpoint)", subtitle="✗: the test fails (moved cues: not robust; "
                                                                      "control: not cue-specific), BH q < .05"))


def ablation_chart(tests: pd.DataFrame, family: str = "zero") -> alt.LayerChart | alt.FacetChart:
    """Drop in best-layer R^2 from ablating the discovered heads across training, with the random same-size head
    sets' 5-95% band, one colour per seed."""
    d = tests[tests["family"] == family].assign(step1=lambda x: x["step"] + 1, seed=lambda x: x["seed"].astype(str))
    base = alt.Chart(d).encode(x=alt.X("step1:Q", scale=alt.Scale(type="log"), axis=STEP_AXIS),
                               color=series_color("seed"))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("null_q05:Q", title="drop in best-layer R²"), y2="null_q95:Q")
    line = base.mark_line(point=True).encode(
        y="drop_r2:Q", tooltip=["seed", "step", alt.Tooltip("drop_r2:Q", format=".4f"),
                                alt.Tooltip("null_mean:Q", format=".4f"), alt.Tooltip("p:Q", format=".3g"), "n_random"])
    zero = alt.Chart(pd.DataFrame({"y": [0]})).mark_rule(color="black").encode(y="y:Q")
    return alt.layer(band, line, zero).properties(
        width=520, height=260, title=f"{family} ablation of discovered heads vs random head sets (band: 5-95%)")


def facet_columns(n: int) -> int:
    """Panels per row of a grid of ``n``: all in one row up to five (a wrapped grid leaves an empty, axis-drawn
    slot), else rows of three or four, whichever fills its last row better."""
    return n if n <= 5 else min((3, 4), key=lambda c: (-n % c, -c))


def head_step_map(d: pd.DataFrame, value: str, legend: str, title: str, seed: int | None = None,
                  defined: pd.Series | None = None, note: str = "") -> alt.LayerChart | alt.FacetChart:
    """Heads (rows) x checkpoints (columns) coloured by ``value`` on a scale symmetric about 0 (so a small negative
    value is pale, not the darkest cell), significant cells outlined in black (said in the subtitle), one panel per
    seed; ``defined``: where the value means something (the colour scale is set from those cells; the rest grey, as
    ``note`` says, which is said only where some cell is grey)."""
    d = d if seed is None else d[d["seed"] == seed]
    ok = pd.Series(True, index=d.index) if defined is None else defined.reindex(d.index).fillna(False).astype(bool)
    d = d.assign(head_id=lambda x: "L" + x["layer"].astype(str) + "H" + x["head"].astype(str),
                 shown=d[value].where(ok))
    d = d[["seed", "step", "head_id", value, "shown", "q", "significant"]]  # what the chart draws: the table stays
    n = 1 if seed is not None else d["seed"].nunique()
    top = float(d["shown"].abs().max()) if d["shown"].notna().any() else 1.0
    color = alt.Color("shown:Q", scale=alt.Scale(scheme="redblue", domain=[-top, top], reverse=True), title=legend,
                      legend=alt.Legend(orient="bottom"))  # below the panels: their row keeps the column's width
    cells = alt.Chart().mark_rect().encode(
        x=alt.X("step:O", title="training step", axis=alt.Axis(labelAngle=-90, labelOverlap="greedy")),
        y=alt.Y("head_id:N", sort=None, title="head"),
        color=alt.condition("isValid(datum.shown)", color, alt.value("#dddddd")),
        stroke=alt.condition("datum.significant", alt.value("black"), alt.value(None)),
        strokeWidth=alt.value(1.5),
        tooltip=["seed", "step", "head_id", alt.Tooltip(f"{value}:Q", format=".4f"), alt.Tooltip("q:Q", format=".3g"),
                 "significant"],
    ).properties(width=480 if n == 1 else max(100, 760 // n), height=260)
    notes = ["black outline: significant after BH-FDR"] + ([note] if note and not bool(ok.all()) else [])
    full = alt.TitleParams(title, subtitle=notes)
    if seed is not None:
        return alt.layer(cells, data=d).properties(title=full)
    return alt.layer(cells, data=d).facet(facet=alt.Facet("seed:N", title="seed"),
                                          columns=facet_columns(n)).properties(title=full)


def causal_map_chart(cmap: pd.DataFrame, seed: int | None = None) -> alt.LayerChart | alt.FacetChart:
    """Single-head ablation effect per (layer, head) and checkpoint; significant cells outlined."""
    return head_step_map(cmap, "drop_r2", "drop in R²", "Causal head map (single-head ablation)", seed)


DEFINED_ROOM = 0.1  # a sufficiency share is drawn where the clean-vs-counterfactual margin is this share of its peak


def patch_map_chart(maps: pd.DataFrame, direction: str, seed: int | None = None) -> alt.LayerChart | alt.FacetChart:
    """Single-head activation patching across training: necessity (``noise``: drop in R²) or sufficiency
    (``denoise``: share of the clean R² recovered); cells significant after BH-FDR outlined."""
    d = maps[(maps["unit"] == "head") & (maps["direction"] == direction)]
    if direction == "noise":
        return head_step_map(d, "effect", "drop in R²", "Necessity (noising one head at the noun)", seed)
    room = d["r2_clean"] - d["r2_counterfactual"]
    most = room.groupby([d["model"], d["seed"]]).transform("max")
    defined = room >= DEFINED_ROOM * most.where(most > 0)
    return head_step_map(d, "share", "share recovered", "Sufficiency (denoising one head at the noun)", seed,
                         defined, f"grey: the clean run's R² above the counterfactual is under {DEFINED_ROOM:.0%} of "
                              "its largest margin, so a share of it is not defined (or is ratio noise)")


def recovery_chart(curve: pd.DataFrame) -> alt.FacetChart:
    """Greedy sufficient sets: share of the clean R² recovered by jointly denoising the first k heads, per seed,
    one panel per checkpoint; the dashed line is the 80% threshold."""
    d = curve.assign(seed=lambda x: x["seed"].astype(str))
    line = alt.Chart(d).mark_line(point=True).encode(
        x=alt.X("size:Q", title="heads in the set"),
        y=alt.Y("recovered:Q", title="share of clean R² recovered", scale=alt.Scale(domain=[-0.25, 1.25], clamp=True)),
        color=alt.Color("seed:N"), tooltip=["seed", "step", "size", "added", alt.Tooltip("recovered:Q", format=".2f")])
    rule = alt.Chart(d).mark_rule(strokeDash=[4, 2], color="gray").encode(y=alt.datum(0.8))
    return alt.layer(line, rule, data=d).properties(width=200, height=160).facet(
        facet=alt.Facet("step:O", title="training step"), columns=4).properties(title="Greedy sufficient head sets")


CONTROL_GREY = "#9a9a9a"
KIND_DASH = {"intact": [1, 0], "perturbation": [5, 2], "control": [1, 3]}


def perturbation_chart(best: pd.DataFrame, score: str = "r2", controls: tuple[str, ...] = ()) -> alt.Chart:
    """Best-layer performance across training for the intact set and every perturbation (mean over seeds); the
    ``controls`` (sets that remove the cue) in grey and dotted, apart from the perturbations."""
    d = best.groupby(["perturbation", "step"], as_index=False)[score].mean().assign(step1=lambda x: x["step"] + 1)
    d["kind"] = ["intact" if p == "intact" else "control" if p in controls else "perturbation"
                 for p in d["perturbation"]]
    moved = sorted(p for p in d["perturbation"].unique() if p != "intact" and p not in controls)
    shown = sorted(p for p in d["perturbation"].unique() if p in controls)
    domain = [*(["intact"] if (d["perturbation"] == "intact").any() else []), *moved, *shown]
    palette = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#eeca3b", "#9d755d"]
    colours = [palette[i % len(palette)] for i in range(len(domain) - len(shown))] + [CONTROL_GREY] * len(shown)
    kinds = [k for k in KIND_DASH if (d["kind"] == k).any()]
    return alt.Chart(d).mark_line(point=True).encode(
        x=alt.X("step1:Q", scale=alt.Scale(type="log"), axis=STEP_AXIS),
        y=alt.Y(f"{score}:Q", title="best-layer R² (mean over seeds)" if score == "r2" else score),
        color=alt.Color("perturbation:N", scale=alt.Scale(domain=domain, range=colours), title="set",
                        legend=alt.Legend(symbolOpacity=1)),
        strokeDash=alt.StrokeDash("kind:N", scale=alt.Scale(domain=kinds, range=[KIND_DASH[k] for k in kinds]),
                                  title="kind", legend=alt.Legend(symbolType="stroke", symbolStrokeColor="black")),
        tooltip=["perturbation", "kind", "step", alt.Tooltip(f"{score}:Q", format=".3f")],
    ).properties(width=520, height=280, title=alt.TitleParams(
        "Disambiguation under perturbation", subtitle="grey dotted: controls (the cue removed: they should keep "
                                                      "nothing), apart from the perturbations (dashed)"))


def seed_trajectories(best: pd.DataFrame, inflection: pd.DataFrame, onset: int | None = None, score: str = "r2",
                      fitted: pd.DataFrame | None = None, columns: int = 3) -> alt.ConcatChart:
    """One small :func:`performance_chart` per seed (its curve, fitted model, onset and profile interval)."""
    panels = []
    for sd in sorted(best["seed"].unique()):
        f = None if fitted is None else fitted[fitted["seed"] == sd]
        panels.append(performance_chart(best[best["seed"] == sd], inflection[inflection["seed"] == sd], onset,
                                        score, f).properties(width=240, height=160, title=f"seed {sd}"))
    return alt.concat(*panels, columns=columns).properties(title="Every seed's trajectory and its inflection")


def attention_beside_score(trajectories: pd.DataFrame, best: pd.DataFrame, stats: pd.DataFrame, score: str = "r2",
                           columns: int = 3) -> alt.ConcatChart:
    """Stage 2's relation, drawn: per seed, each discovered head's mean cue attention across training (coloured
    lines, left axis) beside the best-layer score (black dashed, right axis), on the log step axis."""
    passed = stats.loc[stats["passes"].astype(bool), ["model", "seed", "layer", "head"]]
    t = trajectories.merge(passed, on=["model", "seed", "layer", "head"])
    t = t.assign(step1=t["step"] + 1, series="L" + t["layer"].astype(str) + "H" + t["head"].astype(str))
    s = best.assign(step1=best["step"] + 1)
    title = SCORE_TITLES.get(score, score)
    panels = []
    for sd in sorted(t["seed"].unique()):
        heads = alt.Chart(t[t["seed"] == sd]).mark_line(point=True).encode(
            x=alt.X("step1:Q", scale=alt.Scale(type="log"), axis=STEP_AXIS),
            y=alt.Y("cue_attn:Q", title="cue attention (discovered heads)"), color=series_color("series").title("head"),
            tooltip=["seed", "series", "step", alt.Tooltip("cue_attn:Q", format=".3f")])
        line = alt.Chart(s[s["seed"] == sd]).mark_line(color="black", strokeDash=[5, 3]).encode(
            x="step1:Q", y=alt.Y(f"{score}:Q", title=title, axis=alt.Axis(orient="right")),
            tooltip=["seed", "step", alt.Tooltip(f"{score}:Q", format=".3f")])
        panels.append(alt.layer(heads, line).resolve_scale(y="independent").properties(
            width=230, height=150, title=f"seed {sd}"))
    return alt.concat(*panels, columns=columns).properties(title=alt.TitleParams(
        "Cue attention of the discovered heads beside disambiguation",
        subtitle=f"coloured: each discovered head's attention from the noun to its cue (left axis); black dashed: "
                 f"{title} (right axis)")).resolve_scale(color="shared")


def regression_chart(regression: pd.DataFrame) -> alt.LayerChart | alt.FacetChart:
    """The study's regression per seed: the discovered-vs-random coefficient (how much more the discovered set's edit
    drops R² than the random sets' average, across checkpoints) with its cluster-bootstrap 95% interval, one row per
    seed and a colour per edit; 0 (no difference) marked."""
    d = regression.assign(seed=regression["seed"].astype(str))
    base = alt.Chart(d).encode(y=alt.Y("seed:N", title="seed"), yOffset="family:N", color=series_color("family"))
    bars = base.mark_rule(strokeWidth=2).encode(x=alt.X("target_low:Q", title="discovered minus random: drop in R² "
                                                                              "(coefficient, 95% interval)"),
                                                x2="target_high:Q")
    dots = base.mark_point(filled=True, size=60).encode(
        x="target_coef:Q", tooltip=["family", "seed", alt.Tooltip("target_coef:Q", format=".4f"),
                                    alt.Tooltip("target_low:Q", format=".4f"),
                                    alt.Tooltip("target_high:Q", format=".4f"), alt.Tooltip("target_p:Q", format=".3g"),
                                    alt.Tooltip("target_p_sets:Q", format=".3g")])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="black", strokeDash=[4, 3]).encode(x="x:Q")
    return alt.layer(bars, dots, zero).properties(width=480, height=34 * d["seed"].nunique(), title=alt.TitleParams(
        "The original study's regression, per seed", subtitle="right of the dashed line: the discovered set's edit "
                                                              "drops R² more than random sets do, on average"))


def seed_head_map(counts: pd.DataFrame) -> alt.LayerChart | alt.FacetChart:
    """Layer x head map of how many seeds select each head (``n_seeds_selecting`` of
    :func:`lexprobe.analysis.agreement.seed_counts`), the count written in each cell."""
    n = int(counts["n_seeds"].max())
    base = alt.Chart(counts).encode(x=alt.X("head:O"), y=alt.Y("layer:O", sort="descending"))
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color("n_seeds_selecting:Q", scale=alt.Scale(scheme="blues", domain=[0, n]),
                        title=f"seeds (of {n})"),
        tooltip=["layer", "head", "n_seeds_selecting", "n_seeds", "seeds"])
    text = base.mark_text().encode(text="n_seeds_selecting:Q", color=alt.condition(
        f"datum.n_seeds_selecting > {n / 2}", alt.value("white"), alt.value("black")))
    return alt.layer(cells, text).properties(width=220, height=220, title="Seeds in which each head passes discovery")


def seed_ablation_chart(per_seed: pd.DataFrame) -> alt.FacetChart:
    """Per family and seed at the last checkpoint: the stage-4 drop (point) against its random sets' mean (tick)
    and 95th percentile (bar end)."""
    d = per_seed.assign(seed=per_seed["seed"].astype(str))
    base = alt.Chart().encode(x=alt.X("seed:N"))
    bar = base.mark_rule(color="#999999").encode(y=alt.Y("null_mean:Q", title="drop in best-layer R²"),
                                                 y2="null_q95:Q")
    tick = base.mark_tick(color="#999999", thickness=2).encode(y="null_mean:Q")
    point = base.mark_point(filled=True, size=70, opacity=1).encode(  # solid: the legend's swatches are the points
        y="drop_r2:Q", color=alt.Color("seed:N"),
        tooltip=["family", "seed", "step", alt.Tooltip("drop_r2:Q", format=".4f"),
                 alt.Tooltip("null_mean:Q", format=".4f"), alt.Tooltip("null_q95:Q", format=".4f"),
                 alt.Tooltip("p:Q", format=".3g"), "n_random"])
    return alt.layer(bar, tick, point, data=d).properties(width=160, height=200).facet(
        column=alt.Column("family:N", title="ablation")).properties(
        title="Ablation effect per seed (grey: random head sets, mean to 95th percentile)")


def head_stat_chart(stats: pd.DataFrame, value: str = "r") -> alt.FacetChart:
    """Layer x head map of a head-discovery statistic, one panel per seed; ★ marks heads that pass."""
    d = stats.assign(star=stats["passes"].map({True: "★", False: ""}))
    base = alt.Chart().encode(x=alt.X("head:O"), y=alt.Y("layer:O", sort="descending"))
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme="redblue", domainMid=0, reverse=True)),
        tooltip=["seed", "layer", "head", alt.Tooltip("r:Q", format=".2f"), alt.Tooltip("q:Q", format=".3g"),
                 alt.Tooltip("q_diff:Q", format=".3g"), "passes"])
    return alt.layer(cells, base.mark_text().encode(text="star:N"), data=d).properties(width=150, height=150).facet(
        facet=alt.Facet("seed:N", title="seed"), columns=5).properties(
        title=f"Head discovery per seed: {value} (★ = passes FDR rule + first-difference control)")


def detection_chart(curves: pd.DataFrame, planted: pd.DataFrame | None = None) -> alt.FacetChart:
    """Precision and recall of every head map across training (pooled over seeds), one line per map on a linear step
    axis (a planted organism's carriers form late, where a log axis would crowd them); with ``planted`` (column
    ``opens_step``), a dashed rule at each planted head's opening step."""
    d = curves[curves["seed"].astype(str) == "all"].melt(
        id_vars=["method", "step", "planted", "found", "true_positives", "seeds"], value_vars=["recall", "precision"],
        var_name="score", value_name="value").dropna(subset=["value"])
    lines = alt.Chart().mark_line(point=True).encode(
        x=alt.X("step:Q", title="training step"),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(domain=[0, 1])), color=alt.Color("method:N", title="head map"),
        tooltip=["method", "step", "score", alt.Tooltip("value:Q", format=".2f"), "true_positives", "found",
                 "planted", "seeds"])
    layers: list[alt.Chart] = [lines]
    if planted is not None and planted["opens_step"].gt(0).any():
        opens = pd.DataFrame({"x": sorted(set(planted["opens_step"]) - {0})})
        layers.append(alt.Chart(opens).mark_rule(strokeDash=[6, 3], color="black").encode(
            x="x:Q", tooltip=[alt.Tooltip("x:Q", title="a planted head opens at step")]))
    return alt.layer(*layers, data=d).properties(width=360, height=180).facet(
        column=alt.Column("score:N", title=None, sort=["recall", "precision"]),
        title="Head maps against the certified planted heads across training (pooled over seeds)")


def construct_chart(construct: pd.DataFrame) -> alt.LayerChart | alt.FacetChart:
    """The planted organism's construct check per seed: share of the best-layer score removed by cutting the planted
    heads' noun->cue edges and by cutting the same edges in every other head, with the two thresholds."""
    from lexprobe.analysis.validity import MAX_OTHERS, MIN_PLANTED

    d = construct.melt(id_vars=["seed"], value_vars=["removed_planted", "removed_others"], var_name="cut",
                       value_name="removed").assign(cut=lambda x: x["cut"].str.removeprefix("removed_"),
                                                    seed=lambda x: x["seed"].astype(str))
    bars = alt.Chart(d).mark_bar().encode(
        x=alt.X("seed:N"), xOffset="cut:N", y=alt.Y("removed:Q", title="share of best-layer score removed"),
        color=alt.Color("cut:N", title="edges cut in"), tooltip=["seed", "cut", alt.Tooltip("removed:Q", format=".1%")])
    rules = alt.Chart(pd.DataFrame({"y": [MIN_PLANTED, MAX_OTHERS], "what": ["planted >=", "others <="]})
                      ).mark_rule(strokeDash=[4, 2]).encode(y="y:Q", color=alt.value("gray"), tooltip=["what", "y"])
    return alt.layer(bars, rules).properties(width=360, height=220, title="Construct check (last checkpoint)")
