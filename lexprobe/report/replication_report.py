"""Stage 5 in words: whether seeds agree on when and on which heads, and its view."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lexprobe.base.heads import head_name
from lexprobe.base.view import Block, Figure, Table, Text, View
from lexprobe.report import Earlier, Report, left_out
from lexprobe.report.findings import ALPHA, Finding, Writer, lead
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.replication import STAGE, Replication


def findings(s5: Replication, earlier: Earlier) -> list[Finding]:
    """Whether seeds agree on when (Cochran's Q over onsets) and on which heads (Jaccard vs permutation nulls)."""
    w = Writer(s5)
    for r in s5.spread.itertuples():
        key = {"model": r.model}
        if r.n_tested < 2 or not pd.notna(r.p):
            w.say("Too few seeds with an onset interval to test whether seeds differ.")
            continue
        differ = "differ more than their intervals allow" if r.p < ALPHA else "do not differ beyond their intervals"
        w.say(f"Onsets range from step {w.num('spread', 'min_onset_step', fmt='.0f', **key)} to "
              f"{w.num('spread', 'max_onset_step', fmt='.0f', **key)} across seeds; Cochran's Q = "
              f"{w.num('spread', 'Q', fmt='.1f', **key)} (p = {w.num('spread', 'p', fmt='.2g', **key)}): the seeds "
              f"{differ}.")
    for r in s5.heads.itertuples():
        if r.seeds_with_heads >= 2 and pd.notna(r.jaccard):
            _head_agreement(w, r)
        else:
            w.say("Fewer than two seeds have passing heads, so head agreement cannot be measured.")
    if s5.causal_summary is not None and len(s5.causal_summary):
        _causal_across_seeds(w, s5.causal_summary)
    return w.findings


def _head_agreement(w: Writer, r: Any) -> None:
    """One model's head agreement between seeds (a row of ``heads``) against both permutation nulls."""
    key = {"model": r.model}
    within = ("more than the layers they pick explain" if r.p_within_layer < ALPHA
              else "no more than the layers they pick explain")
    anywhere = ("it exceeds" if r.p_anywhere < ALPHA else "it does not exceed")
    w.say(f"Seeds share discovered heads {within}: mean Jaccard {w.num('heads', 'jaccard', fmt='.2f', **key)} "
          f"against {w.num('heads', 'null_within_layer_mean', fmt='.2f', **key)} for heads drawn within the same "
          f"layers (p = {w.num('heads', 'p_within_layer', fmt='.2g', **key)}); {anywhere} the "
          f"{w.num('heads', 'null_anywhere_mean', fmt='.2f', **key)} of heads drawn anywhere (p = "
          f"{w.num('heads', 'p_anywhere', fmt='.2g', **key)}), which layer preference alone can produce.",
          headline=True)


def _causal_across_seeds(w: Writer, summary: pd.DataFrame) -> None:
    """Stage 4's null tests of the discovered heads combined across seeds (Fisher), one sentence per family."""
    for r in summary.itertuples():
        key = {"family": r.family, "model": r.model}
        w.say(f"Across seeds, {r.family} of the discovered heads beats random same-size sets in "
              f"{w.num('causal_summary', 'n_significant', fmt='.0f', **key)} of "
              f"{w.num('causal_summary', 'n_seeds', fmt='.0f', **key)} seeds (Fisher's combined p = "
              f"{w.num('causal_summary', 'fisher_p', fmt='.2g', **key)}; the smallest p one seed's test can reach: "
              f"{w.num('causal_summary', 'min_attainable_p', fmt='.2g', **key)}).", headline=r.family == "qk-copy")



def describe(s5: Replication, earlier: Earlier) -> View:
    """Stage 5's view: every seed's trajectory and inflection, their spread, the mixed model, head agreement between
    seeds and (with stage 4) the ablation effect per seed, beside the trajectories of the stage 1 it compared."""
    stage1: Inflection = earlier["inflection"]
    blocks: list[Block] = [
        Text(lead(findings(s5, earlier))), *left_out(s5.parts_skipped),
        Figure("seed_trajectories", {"best": stage1.best, "inflection": stage1.inflection, "onset": stage1.onset,
                                     "score": stage1.score, "fitted": stage1.fitted},
               "every seed's trajectory with its onset and profile interval", "seed-trajectories"),
        Table(s5.inflection, "Stage 1's onsets per seed on the log10(step+1) scale the spread test uses (se from the "
                             "bootstrap interval)", collapsed=True),
        Table(s5.spread, "Spread of the onsets and Cochran's Q: do seeds differ more than their intervals allow?",
              keep=("min_onset_step", "max_onset_step", "Q", "p")),
        Text("Mixed model: score ~ pre + post, pre = x - c, post = max(x - c, 0), x = log10(step+1); random intercept "
             "+ post slope per seed (statsmodels MixedLM, REML).", note=True),
        Table(s5.mixed.fixed, "Mixed model fixed effects (score ~ pre + post around the inflection; Wald 95% CI)"),
        Table(s5.mixed.variance, "Seed variance components"),
        Table(s5.mixed.info, "Mixed model fit"),
        Figure("seed_head_map", {"counts": s5.head_counts}, "how many seeds select each head", "seed-heads")]
    for model, g in s5.head_counts.groupby("model"):
        chosen = g[g["n_seeds_selecting"] > 0].sort_values(["n_seeds_selecting", "layer", "head"],
                                                           ascending=[False, True, True])
        heads = ", ".join(f"{head_name(r.layer, r.head)} {r.n_seeds_selecting}" for r in chosen.itertuples()) or "none"
        blocks.append(Text(f"{model}: seeds (of {int(g['n_seeds'].max())}) selecting each head: {heads}"))
    blocks.append(Table(s5.heads, "Head agreement: Jaccard vs within-layer and anywhere permutation nulls",
                        keep=("jaccard", "null_within_layer_mean", "p_within_layer", "null_anywhere_mean",
                              "p_anywhere")))
    blocks += [Text(f"{r.model}: {r.seeds_with_heads} seed(s) with passing heads: no agreement between seeds to "
                    "measure") for r in s5.heads.itertuples() if r.seeds_with_heads < 2]
    blocks.append(Table(s5.head_pairs, "Jaccard per pair of seeds", collapsed=True))
    if s5.causal is not None and len(s5.causal):  # the stage-4 null tests of the discovered heads, when it ran any
        blocks += [Figure("seed_ablation_chart", {"per_seed": s5.causal}, "ablation effect per seed", "seed-ablation"),
                   Table(s5.causal, "Stage 4's null tests per seed at the last checkpoint (as in stage 4), the "
                                    "inputs of the combined test below", collapsed=True),
                   Table(s5.causal_summary, "Stage-4 effect across seeds (Fisher's combined p)",
                         keep=("n_seeds", "n_significant", "fisher_p", "min_attainable_p"))]
    return View(f"Stage 5 · {STAGE.title}", "stage5", tuple(blocks))



REPORT = Report(describe, findings)
