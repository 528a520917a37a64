"""The executable supplement: all five stages in ONE self-contained HTML file (``lexprobe report``).

Every chart is a Vega-Lite spec in a ``<script type="application/json" class="lexprobe-spec">`` block next to its
``<div class="lexprobe-figure">``; one inline copy of the Vega / Vega-Lite / vega-embed bundle (from
``vl-convert-python``, the bundle altair's own ``inline=True`` export uses) renders them, so the file opens with no
network. Tables are plain HTML; a provenance section records versions, the suite, resolved commits, the stimuli
hash and the exact command.
"""

from __future__ import annotations

import html
import json
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import altair as alt
import pandas as pd

import lexprobe
from lexprobe.analysis.primitives import at_last_checkpoint
from lexprobe.analysis.validity import MAX_OTHERS, MIN_PLANTED
from lexprobe.base.paths import REPO_ROOT
from lexprobe.checkpoints.suites import Suite
from lexprobe.stages.causal import Causal
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.perturbation import Perturbation
from lexprobe.stages.replication import Replication
from lexprobe.stages.validation import validation_stage
from lexprobe.stimuli.tables import Stimuli
from lexprobe.study import Study
from lexprobe.views import viz

LIBRARIES = ("torch", "transformers", "nnsight", "numpy", "pandas", "scipy", "statsmodels", "ruptures", "altair",
             "vl-convert-python", "pyarrow")
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f2f2f2; }
.lexprobe-figure { margin: 1em 0 2em; }
.note { color: #555; font-style: italic; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
"""
RENDER = """
document.querySelectorAll('script.lexprobe-spec').forEach(function (el) {
  vegaEmbed('#' + el.dataset.figure, JSON.parse(el.textContent), {actions: false, renderer: 'svg'})
    .catch(function (err) { document.getElementById(el.dataset.figure).textContent = 'chart error: ' + err; });
});
"""


@dataclass
class Page:
    """An HTML body being built: blocks in order and the figures (id -> Vega-Lite spec) they reference."""

    blocks: list[str] = field(default_factory=list)
    figures: dict[str, dict] = field(default_factory=dict)

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        ident = f' id="{anchor}"' if anchor else ""
        self.blocks.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")

    def text(self, text: str, note: bool = False) -> None:
        self.blocks.append(f'<p{" class=note" if note else ""}>{html.escape(text)}</p>')

    def pre(self, text: str) -> None:
        self.blocks.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, df: pd.DataFrame, caption: str, collapsed: bool = False) -> None:
        body = df.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.4g}", border=0)
        cap = html.escape(caption)
        body = f'<div class="table-wrap">{body}</div>'
        self.blocks.append(f"<details><summary>{cap} ({len(df)} rows)</summary>{body}</details>" if collapsed
                           else f"<p><b>{cap}</b></p>{body}")

    def chart(self, name: str, chart: alt.TopLevelMixin, caption: str) -> None:
        fid = f"fig-{len(self.figures) + 1}-{name}"
        with alt.data_transformers.disable_max_rows():  # the file must hold every row (big suites: big file)
            self.figures[fid] = chart.to_dict()
        self.blocks.append(f'<div class="lexprobe-figure" id="{fid}" data-caption="{html.escape(caption)}"></div>'
                           f"<p class=note>Figure {len(self.figures)}: {html.escape(caption)}</p>")


def _script_json(obj: object) -> str:
    """JSON safe inside a <script> element (no '</' that could close it)."""
    return json.dumps(obj).replace("</", "<\\/")


def vega_bundle() -> str:
    """Vega, Vega-Lite (the version altair writes) and vega-embed as one inline script, from vl-convert."""
    import vl_convert
    from altair.utils._importers import vl_version_for_vl_convert

    # vl-convert's stub marks ``snippet`` required; it defaults (to the snippet that sets window.vegaEmbed etc.)
    bundle = vl_convert.javascript_bundle(vl_version=vl_version_for_vl_convert())  # type: ignore[call-arg]
    return bundle.replace("</script", "<\\/script")


def document(title: str, page: Page) -> str:
    """The whole self-contained HTML file."""
    specs = "\n".join(f'<script type="application/json" class="lexprobe-spec" data-figure="{fid}">'
                      f"{_script_json(spec)}</script>" for fid, spec in page.figures.items())
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}"
            f"</title>\n<style>{STYLE}</style>\n<script>{vega_bundle()}</script>\n</head>\n<body>\n"
            + "\n".join(page.blocks) + f"\n{specs}\n<script>{RENDER}</script>\n</body>\n</html>\n")


def _versions() -> pd.DataFrame:
    rows = [{"package": "lexprobe", "version": lexprobe.__version__}, {"package": "python",
                                                                          "version": platform.python_version()}]
    for name in LIBRARIES:
        try:
            rows.append({"package": name, "version": version(name)})
        except PackageNotFoundError:
            rows.append({"package": name, "version": "not installed"})
    return pd.DataFrame(rows)


def _source_commit() -> str:
    """The git commit of the lexprobe source tree (``+dirty`` with uncommitted changes), or 'unknown'."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _provenance(page: Page, suite: Suite, stimuli: Stimuli, commits: pd.DataFrame, command: str) -> None:
    page.heading("Provenance", anchor="provenance")
    page.table(pd.DataFrame([
        {"item": "command", "value": command},
        {"item": "generated (UTC)", "value": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")},
        {"item": "lexprobe source commit", "value": _source_commit()},
        {"item": "platform", "value": platform.platform()},
        {"item": "suite", "value": suite.name},
        {"item": "suite identity", "value": json.dumps(suite.identity(), sort_keys=True)},
        {"item": "models / seeds / steps", "value": f"{', '.join(suite.models)} / {list(suite.seeds)} / "
                                                    f"{len(suite.steps)} steps {list(suite.steps)}"},
        {"item": "suite metadata", "value": json.dumps(suite.metadata, sort_keys=True, default=str)},
        {"item": "stimuli", "value": f"{stimuli.name}: {len(stimuli.pairs)} pairs, "
                                     f"{len(stimuli.sentences)} sentences, content hash {stimuli.hash}"},
    ]), "Run")
    page.table(_versions(), "Versions")
    page.table(commits, "Resolved commit and weights hash of every checkpoint (intact condition)", collapsed=True)


def _stage1(page: Page, s1: Inflection) -> None:
    page.heading("Stage 1 · When does disambiguation take off?", anchor="stage1")
    page.text(f"Best-layer {s1.score} across training per seed; the inflection is the onset of the rise (curve model "
              "chosen by AICc on log10(step+1)), with profile-likelihood and item-bootstrap intervals.")
    page.chart("performance", viz.performance_chart(s1.best, s1.inflection, onset=s1.onset, score=s1.score,
                                                    fitted=s1.fitted), "best-layer score across training, all seeds")
    page.chart("layers", viz.layer_chart(s1.perf), "score per layer and checkpoint (mean over seeds)")
    page.table(s1.inflection[["model", "seed", "curve_model", "shape", "onset_step", "onset_low_step",
                              "onset_high_step", "onset_boot_low_step", "onset_boot_high_step", "midpoint_step",
                              "saturation_step", "changepoint_step"]], "Inflection per seed")
    if s1.onset is not None:
        page.text(f"Planted onset of the organism: step {s1.onset}.")


def _stage2(page: Page, s2: Discovery) -> None:
    page.heading("Stage 2 · Which heads track it?", anchor="stage2")
    st = s2.stats
    page.chart("heads", viz.head_stat_chart(st), "head discovery statistic per seed")
    counts = st.groupby(["model", "seed"])[["selected", "diff_ok", "logstep_ok", "perm_ok", "beats_prev",
                                            "passes"]].sum().reset_index()
    page.table(counts, "Heads meeting each criterion per seed (passes = FDR rule + first-difference trend control)")
    page.table(st[st["passes"]][["model", "seed", "layer", "head", "r", "slope", "q", "q_diff", "q_prev",
                                 "beats_prev"]], "Heads that pass, per seed")


def _stage3(page: Page, s3: Perturbation) -> None:
    page.heading("Stage 3 · Are the heads robust to perturbation?", anchor="stage3")
    page.chart("perturbation", viz.perturbation_chart(s3.best), "best-layer R² under each perturbation")
    page.chart("robustness", viz.robustness_heatmap(s3.heads), "cue attention kept under perturbation")
    page.table(s3.distance, "Perturbed sets (cue-target distance in tokens)")
    last = at_last_checkpoint(s3.retained)
    page.table(last.pivot_table(index="seed", columns="perturbation", values="r2_retained").reset_index(),
               "Share of the intact best-layer R² kept at the last checkpoint")
    page.table(last.pivot_table(index="seed", columns="perturbation", values="r2_baseline").reset_index(),
               "Baseline: each perturbed set's own R² at its first checkpoint (its words alone, before training)")
    page.table(last.pivot_table(index="seed", columns="perturbation", values="r2_retained_net").reset_index(),
               "Share of the intact gain over baseline kept: (R² − baseline) / (intact R² − intact baseline)")
    page.table(s3.summary, "Discovered heads at the last checkpoint: cue attention intact and perturbed")


def _stage4(page: Page, s4: Causal) -> None:
    page.heading("Stage 4 · Are the heads causally necessary?", anchor="stage4")
    if (s4.tests["family"] == "zero").any():
        page.chart("ablation", viz.ablation_chart(s4.tests), "zero ablation of the discovered heads across training")
    else:
        page.text("No seed has heads that pass discovery: there is no discovered set to ablate.", note=True)
    page.chart("causal-map", viz.causal_map_chart(s4.causal_map), "causal head map (single-head ablation)")
    if len(s4.causal_map):
        page.text(f"Causal head map: paired item bootstrap of each head's R² drop, one-sided normal-approximation p "
                  f"from the bootstrap standard error, BH-FDR over {s4.causal_map['fdr_family'].iloc[0]} (m = "
                  f"{int(s4.causal_map['fdr_family_size'].max())}). Null tests of head sets: a rank against the "
                  "random sets where its floor 1/(n+1) resolves alpha, else a t prediction test (column method).",
                  note=True)
    page.table(at_last_checkpoint(s4.tests), "Null tests at the last checkpoint (drop in R²; p vs random sets)")
    page.table(s4.controls[["model", "seed", "step", "condition", "drop_r2"]], "No-op control (drop must be 0)")
    page.table(s4.exactness, "Exactness: every target→cue edge cut")
    page.table(s4.agreement, "Causal map vs discovery at the last checkpoint")
    if (s4.tests["family"].isin(["qk-zero", "qk-copy"])).any():
        page.chart("qk-edit", viz.ablation_chart(s4.tests, "qk-copy"), "QK rows of the discovered heads copied from "
                   "the earliest checkpoint after step 0, across training, against random sets")
    if len(s4.regression):
        page.table(s4.regression, "The original study's regression: drop ~ log10(step + 1) + target-vs-random")
    _patching(page, s4)


def _patching(page: Page, s4: Causal) -> None:
    page.heading("Activation patching: necessity and sufficiency at the noun", anchor="patching")
    page.text(f"Counterfactual: {s4.counterfactual.name} ({len(s4.counterfactual.sentences)} sentences, each cue "
              "replaced by a sense-neutral modifier in its place; the noun's tokens matched by role). Noising replaces "
              "one head's output at the noun by its counterfactual output (necessity: drop in R²); denoising restores "
              "it in the counterfactual run (sufficiency: share of the clean R² above the counterfactual recovered).",
              note=True)
    if s4.patch_maps.empty:
        return
    page.chart("necessity-map", viz.patch_map_chart(s4.patch_maps, "noise"), "necessity map (noising)")
    page.chart("sufficiency-map", viz.patch_map_chart(s4.patch_maps, "denoise"), "sufficiency map (denoising)")
    page.text(f"Both maps: paired item bootstrap, normal-approximation p, BH-FDR over "
              f"{s4.patch_maps['fdr_family'].iloc[0]} (m = {int(s4.patch_maps['fdr_family_size'].max())}).", note=True)
    page.table(s4.patch_exactness, "Exactness controls (max abs differences; must be at most 1e-6)")
    page.table(s4.patch_agreement, "Necessary (noise) and sufficient (denoise) heads at the last checkpoint vs "
               "discovery")
    first = s4.patch_first.dropna(subset=["first_step"])
    page.table(first, "First checkpoint at which each head is significant")
    if len(s4.greedy_curve):
        page.chart("recovery", viz.recovery_chart(s4.greedy_curve), "greedy sufficient sets: recovery curves")
    page.table(s4.greedy_tests, "Greedy sets against random same-size sets, and how they work (OR / AND)")


def _stage5(page: Page, s1: Inflection, s5: Replication) -> None:
    page.heading("Stage 5 · Do the findings replicate across seeds?", anchor="stage5")
    page.chart("seed-trajectories", viz.seed_trajectories(s1.best, s1.inflection, s1.onset, s1.score, s1.fitted),
               "every seed's trajectory with its onset and profile interval")
    page.table(s5.inflection, "Inflection per seed (log10 of step+1; se from the bootstrap interval)")
    page.table(s5.spread, "Spread of the onsets and Cochran's Q: do seeds differ more than their intervals allow?")
    page.table(s5.mixed.fixed, "Mixed model fixed effects (score ~ pre + post around the inflection; Wald 95% CI)")
    page.table(s5.mixed.variance, "Seed variance components")
    page.table(s5.mixed.info, "Mixed model fit")
    page.chart("seed-heads", viz.seed_head_map(s5.head_counts), "how many seeds select each head")
    page.table(s5.heads, "Head agreement: Jaccard vs within-layer and anywhere permutation nulls")
    page.table(s5.head_pairs, "Jaccard per pair of seeds", collapsed=True)
    if s5.causal is not None:
        page.chart("seed-ablation", viz.seed_ablation_chart(s5.causal), "ablation effect per seed")
        page.table(s5.causal, "Stage-4 effect per seed at the last checkpoint")
        page.table(s5.causal_summary, "Stage-4 effect across seeds (Fisher's combined p)")


def _validation(page: Page, s1: Inflection, s2: Discovery | None, s4: Causal | None) -> None:
    """Validation against a planted circuit: computed from this report's own stages when its suite has a plant
    (the construct check's two knockouts go through the results store), else a pointer to ``lexprobe validate``."""
    page.heading("Validation against a planted circuit", anchor="validation")
    if "planted_heads" not in s1.suite.metadata:
        page.text("This suite has no planted circuit, so nothing here is held against known heads. `lexprobe validate "
                  "--html FILE` trains (or reuses) the planted organism, whose noun->cue edges were open only in "
                  "designated heads during training, and writes its supplement with this section filled in.",
                  note=True)
        return
    if s2 is None or s4 is None:
        page.text("Stages 2 and 4 did not run, so there are no head maps to validate.", note=True)
        return
    v = validation_stage(s1, s2, s4, progress=False)
    page.text("Training cut the attention edges from each ambiguous noun's tokens to its cue's tokens in every head "
              "but the planted ones. Construct check: cutting the planted heads' target->cue edges at the last "
              f"checkpoint must remove at least {MIN_PLANTED:.0%} of best-layer {s1.score}, cutting them in every "
              f"other head at most {MAX_OTHERS:.0%}; a seed that fails has no ground truth.", note=True)
    page.table(v.construct, "Construct check per seed (last checkpoint)")
    page.table(v.validity, "Precision and recall against the planted heads at the last checkpoint (seed 'all': "
                           "counts pooled over seeds)")
    page.table(v.first_significant, "First checkpoint at which each planted head is significant, beside the "
                                    "planted onset and stage 1's onset estimate")


def supplement(s1: Inflection, s2: Discovery | None, s3: Perturbation | None, s4: Causal | None, s5: Replication | None,
               commits: pd.DataFrame, command: str, skipped: dict[str, str] | None = None) -> str:
    """The HTML supplement of finished stages (``None`` for a stage that could not run; ``skipped`` says why)."""
    page = Page()
    title = f"lexprobe supplement: {s1.suite.name}"
    page.heading(title, level=1)
    page.text(f"{s1.best['model'].nunique()} model(s), {s1.best['seed'].nunique()} seed(s), "
              f"{s1.best['step'].nunique()} checkpoints; stimuli {s1.stimuli.name} ({len(s1.stimuli.pairs)} pairs). "
              "Every chart is embedded in this file and renders without network access.")
    _stage1(page, s1)
    # each writer bound to its own stage (they take different stage types), None for a stage that did not run
    writers = (("stage 2", None if s2 is None else partial(_stage2, page, s2)),
               ("stage 3", None if s3 is None else partial(_stage3, page, s3)),
               ("stage 4", None if s4 is None else partial(_stage4, page, s4)))
    for name, write in writers:
        if write is not None:
            write()
        else:
            page.heading(name.capitalize(), anchor=name.replace(" ", ""))
            page.text(f"{name} skipped: {(skipped or {}).get(name, 'not run')}", note=True)
    if s5 is not None:
        _stage5(page, s1, s5)
    else:
        page.heading("Stage 5", anchor="stage5")
        page.text(f"stage 5 skipped: {(skipped or {}).get('stage 5', 'not run')}", note=True)
    _validation(page, s1, s2, s4)
    _provenance(page, s1.suite, s1.stimuli, commits, command)
    return document(title, page)


def write_report(study: Study, out: str | Path, command: str | None = None) -> Path:
    """Run (or reuse from the results store) all five stages of ``study`` and write the supplement to ``out``."""
    s1 = study.inflection
    s2 = s3 = s4 = s5 = None
    skipped: dict[str, str] = {}
    try:
        s2 = study.heads
    except ValueError as err:  # too few checkpoints for head discovery: stages 3-5 need its heads
        skipped = dict.fromkeys(("stage 2", "stage 3", "stage 4", "stage 5"), str(err))
    if s2 is not None:
        s3, s4 = study.perturbation, study.causal
        try:
            s5 = study.seeds
        except ValueError as err:  # a single seed
            skipped["stage 5"] = str(err)
    commits = study.store.provenance(suite=s1.suite.name, stimuli=s1.stimuli.name, condition=s1.condition)
    text = supplement(s1, s2, s3, s4, s5, commits[["model", "seed", "step", "commit", "weights_hash"]],
                      command or shlex.join(["lexprobe", *sys.argv[1:]]), skipped)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
