"""Plain-text summary of stages 1-2 for the command line (``lexprobe run`` / ``lexprobe analyse``)."""

from __future__ import annotations

from pathlib import Path

from lexprobe.paths import results_dir
from lexprobe.stages import Stage1, head_stage, inflection_stage
from lexprobe.store import ResultsStore
from lexprobe.stimuli import Stimuli
from lexprobe.suites import Suite


def _steps(lo: float, hi: float, width: int = 6) -> str:
    return f"[{lo:{width}.0f}, {hi:{width}.0f}]" if lo == lo else f"{'none':^{2 * width + 4}}"


def _inflection_lines(s1: Stage1) -> list[str]:
    """Per seed: the curve model AICc chose, onset (= "the inflection"), midpoint, saturation, cross-checks; with a
    planted onset, whether each seed's onset interval lies after it and its estimate is within 4x of it."""
    inf = s1.inflection
    lines = ["inflection = onset of the rise (curve model chosen by AICc on log10(step+1)); intervals: profile "
             "likelihood, item bootstrap", "seed  R2@first  R2@last  model       shape                onset  "
             "CI(profile)       CI(item bootstrap)  midpoint  saturation  max-increase/decade  changepoint"]
    last = s1.best.sort_values("step").groupby(["model", "seed"])
    for r in inf.itertuples():
        g = last.get_group((r.model, r.seed))[s1.score]
        lines.append(f"{r.seed:>4}  {g.iloc[0]:8.3f}  {g.iloc[-1]:7.3f}  {str(r.curve_model):10s}  {r.shape:19s}  "
                     f"{r.onset_step:5.0f}  {_steps(r.onset_low_step, r.onset_high_step)}  "
                     f"{_steps(r.onset_boot_low_step, r.onset_boot_high_step)}    {r.midpoint_step:8.0f}  "
                     f"{r.saturation_step:10.0f}  {r.max_increase_from:>7.0f}->{r.max_increase_step:<7.0f}"
                     f"({r.max_increase_per_decade:.3f})  {r.changepoint_step:11.0f}")
    if s1.onset is None:
        return lines
    lines.append("")
    for r in inf.itertuples():
        after = r.onset_low_step > s1.onset  # False when there is no interval
        within = s1.onset / 4 <= r.onset_step <= s1.onset * 4
        estimate = f"{r.onset_step:.0f}" if r.onset_step == r.onset_step else f"none ({r.shape}, {r.selected_by})"
        interval = _steps(r.onset_low_step, r.onset_high_step, 0).strip()
        lines.append(f"seed {r.seed}: onset interval {interval} lies after the onset ({s1.onset}): "
                     f"{'yes' if after else 'NO'}; onset estimate {estimate} within 4x of the onset "
                     f"[{s1.onset / 4:.0f}, {s1.onset * 4:.0f}]: {'yes' if within else 'NO'}")
    return lines


def report(suite: str | Suite, stimuli: str | Stimuli = "lexprobe_nouns", root: str | Path | None = None,
           steps: str = "all") -> str:
    """Inflection per seed (with the planted onset when known) and the heads that pass discovery + trend control."""
    return summary(inflection_stage(suite, stimuli, steps, root=root, progress=True), root=root)


def summary(s1: Stage1, root: str | Path | None = None) -> str:
    """The text of :func:`report` for a finished inflection stage."""
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
    lines += _inflection_lines(s1)
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
