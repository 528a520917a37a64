"""Plain-text summary of stages 1-2 for the command line (``lexprobe run`` / ``lexprobe analyse``)."""

from __future__ import annotations

from pathlib import Path

from lexprobe.paths import results_dir
from lexprobe.stages import head_stage, inflection_stage
from lexprobe.store import ResultsStore
from lexprobe.stimuli import Stimuli
from lexprobe.suites import Suite


def report(suite: str | Suite, stimuli: str | Stimuli = "lexprobe_nouns", root: str | Path | None = None,
           steps: str = "all") -> str:
    """Inflection per seed (with the planted onset when known) and the heads that pass discovery + trend control."""
    s1 = inflection_stage(suite, stimuli, steps, root=root, progress=True)
    prov = ResultsStore(root or results_dir()).provenance(suite=s1.suite.name, stimuli=s1.stimuli.name)
    dupes = prov[prov["same_as_previous"]]
    lines = [f"suite {s1.suite.name}: {s1.best['model'].nunique()} model(s), {s1.best['seed'].nunique()} seed(s), "
             f"{s1.best['step'].nunique()} checkpoints, stimuli {s1.stimuli.name} ({len(s1.stimuli.pairs)} pairs, "
             f"target: {s1.perf['target'].iloc[0]})"]
    if s1.onset is not None:
        lines.append(f"planted onset: step {s1.onset}")
    for r in dupes.itertuples():
        lines.append(f"WARNING: {r.model} seed {r.seed} step {r.step} has the same weights as the previous step")
    skipped = s1.status[s1.status["status"] == "skipped"]
    for r in skipped.itertuples():
        lines.append(f"WARNING: skipped {r.model} seed {r.seed} step {r.step}: {r.reason}")
    lines.append("")
    lines.append("seed  R2@first  R2@last  breakpoint  CI(segmented)      CI(item bootstrap)  max-increase  changepoint")
    last = s1.best.sort_values("step").groupby(["model", "seed"])
    for r in s1.inflection.itertuples():
        g = last.get_group((r.model, r.seed))
        lines.append(f"{r.seed:>4}  {g['r2'].iloc[0]:8.3f}  {g['r2'].iloc[-1]:7.3f}  {r.breakpoint_step:10.0f}  "
                     f"[{r.ci_low_step:6.0f}, {r.ci_high_step:6.0f}]  [{r.boot_low_step:6.0f}, {r.boot_high_step:6.0f}]"
                     f"  {r.max_increase_step:12.0f}  {r.changepoint_step:11.0f}")
    if s1.onset is not None:
        lines.append("")
        for r in s1.inflection.itertuples():
            after = r.ci_low_step > s1.onset
            within = s1.onset / 4 <= r.breakpoint_step <= s1.onset * 4
            lines.append(f"seed {r.seed}: segmented CI [{r.ci_low_step:.0f}, {r.ci_high_step:.0f}] lies after the onset "
                         f"({s1.onset}): {'yes' if after else 'NO'}; breakpoint {r.breakpoint_step:.0f} within 4x of "
                         f"the onset [{s1.onset / 4:.0f}, {s1.onset * 4:.0f}]: {'yes' if within else 'NO'}")
    lines.append("")
    try:
        s2 = head_stage(s1, root=root)
    except ValueError as err:  # e.g. fewer checkpoints than head discovery needs: stage 1 still stands
        lines.append(f"stage 2 (head discovery) skipped: {err}")
        return "\n".join(lines)
    st = s2.stats
    lines.append("heads (of " + str(st.groupby("seed").size().iloc[0]) + " per seed) meeting each criterion:")
    counts = st.groupby(["model", "seed"])[["selected", "diff_ok", "logstep_ok", "perm_ok", "beats_prev", "passes"]].sum()
    lines.append(counts.rename(columns={"selected": "FDR rule", "diff_ok": "1st-diff", "logstep_ok": "log-step",
                                        "perm_ok": "permutation", "beats_prev": "> prev-token",
                                        "passes": "PASS (FDR + 1st-diff)"}).to_string())
    for (model, seed), g in st.groupby(["model", "seed"]):
        passing = g[g["passes"]].sort_values("q_diff")
        names = ", ".join(f"L{r.layer}H{r.head} (r={r.r:.2f}, q={r.q:.1g}, q_diff={r.q_diff:.2g}, "
                          f"{'beats' if r.beats_prev else 'not above'} prev-token)" for r in passing.itertuples())
        lines.append(f"seed {seed}: passing heads: {names or '-'}")
    return "\n".join(lines)
