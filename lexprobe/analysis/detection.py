"""Head finding scored across development against a planted ground truth: when, how well and how each head map
finds the heads a planted organism was built to carry the cue.

* :func:`scored`: per head map and (model, seed, step), the heads it names against the heads it should name there
  (the certified planted heads whose edges had opened by that step); :func:`pooled` adds precision and recall,
  pooled over seeds per ``keys``. Stage 1-4 maps at every checkpoint give the precision/recall curves, the same
  counts at the last checkpoint the validity table.
* :func:`stage2_by_step`: stage 2's statistics had training stopped at each checkpoint (trajectories cut there),
  so that stage 2's rules become maps across development too.
* :func:`carrier_steps` and :func:`lags`: from the per-head construct check at several checkpoints, the step from
  which each planted head carries the cue; per map, how long after its planted opening (and after it became a
  carrier) each head is first detected.
* :func:`readings`: what was planted (single, OR, joint), what the organism learned (the construct check's reading)
  and what the greedy sufficient set reads (single / OR / AND / distributed / mixed), per seed.
* :func:`rule_maps`, :func:`rule_scores` and :func:`choose_and_confirm`: stage 2's selection rules scored with
  cluster-bootstrap intervals over (profile, seed) units, and a rule chosen on some seeds and confirmed on others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from lexprobe.analysis.primitives import at_last_checkpoint, stays_from
from lexprobe.analysis.selection import DEFAULT_RULE as DEFAULT_KEY
from lexprobe.analysis.selection import MIN_STEPS, RULE_TITLES, RULES, discover, passing
from lexprobe.base.heads import Head, heads_name

MAP_COLUMNS = ("model", "seed", "step", "layer", "head", "significant")
ALL_SEEDS = "all"
COUNTS = ["planted", "found", "true_positives", "decoys", "decoys_found"]
DEFAULT_RULE = RULE_TITLES[DEFAULT_KEY]  # stage 2's default ``passes``, as the tables name it
DRAWS = 2000  # bootstrap draws over (profile, seed) units
def check_map(name: str, table: pd.DataFrame) -> None:
    """Fail with the map's name when it lacks a head map's columns."""
    missing = [c for c in MAP_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"head map {name!r} lacks column(s) {missing}; a map has columns {MAP_COLUMNS}")


def truth_of(certified: pd.DataFrame) -> Callable[[str, int, int], set[Head]]:
    """The heads a map should name at (model, seed, step): the certified planted heads (columns model, seed, layer,
    head, and optionally ``opens_step``) whose edges had opened by that step (all of them without ``opens_step``)."""
    opens = certified["opens_step"] if "opens_step" in certified.columns else pd.Series(0, index=certified.index)
    rows: dict[tuple[str, int], list[tuple[Head, float]]] = {}
    for r, o in zip(certified.itertuples(), opens):
        rows.setdefault((str(r.model), int(r.seed)), []).append(((int(r.layer), int(r.head)), float(o)))
    return lambda model, seed, step: {h for h, o in rows.get((str(model), int(seed)), []) if o <= step}


def scored(maps: Mapping[str, pd.DataFrame], certified: pd.DataFrame, last_only: bool = False,
           decoys: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (method, model, seed, step) of each map (its last step alone with ``last_only``): how many heads it should
    name (``planted``), names (``found``) and names rightly (``true_positives``), and which; with ``decoys``
    (columns model, seed, layer, head: the certified-empty decoy heads) how many decoys there are and how many it
    names (``decoys_found``); and ``auroc``, the pessimistic threshold-free area (:func:`auroc`) of the map's
    ``score`` column (its ``significant`` column where it has none)."""
    truth = truth_of(certified)
    lures = truth_of(decoys if decoys is not None else certified.iloc[:0])
    rows = []
    for method, table in maps.items():
        check_map(method, table)
        at = at_last_checkpoint(table) if last_only and len(table) else table
        for (model, sd, step), g in at.groupby(["model", "seed", "step"]):
            heads = [(int(r.layer), int(r.head)) for r in g.itertuples()]
            found = {h for h, sig in zip(heads, g["significant"]) if sig}
            want, lure = truth(model, sd, step), lures(model, sd, step)
            score = (g["score"] if "score" in g.columns else g["significant"]).to_numpy(float)
            rows.append({"method": method, "model": model, "seed": int(sd), "step": int(step), "planted": len(want),
                         "found": len(found), "true_positives": len(found & want), "decoys": len(lure),
                         "decoys_found": len(found & lure),
                         "auroc": auroc(score, np.array([h in want for h in heads])),
                         "planted_heads": heads_name(sorted(want)), "found_heads": heads_name(sorted(found))})
    return pd.DataFrame(rows, columns=["method", "model", "seed", "step", *COUNTS, "auroc", "planted_heads",
                                       "found_heads"])


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """The pessimistic staircase area under the ROC curve: the share of (positive, negative) head pairs in which
    the positive scores strictly higher, ties counted against the method (InterpBench's and ACDC's convention: a
    map that cannot tell two heads apart gets no credit for it); NaN without positives or negatives. NaN scores
    rank lowest."""
    s = np.where(np.isfinite(score), score, -np.inf)
    pos, neg = s[positive], s[~positive]
    if not len(pos) or not len(neg):
        return np.nan
    return float((pos[:, None] > neg[None, :]).mean())


def rates(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with precision (NaN where nothing is found), recall (NaN where nothing is planted) and the decoy
    false-positive rate (NaN without decoys)."""
    out = table.assign(precision=table["true_positives"] / table["found"].replace(0, np.nan),
                       recall=table["true_positives"] / table["planted"].replace(0, np.nan))
    if "decoys" in table.columns:
        out["decoy_fpr"] = table["decoys_found"] / table["decoys"].replace(0, np.nan)
    return out


def pooled(per_seed: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The per-seed rows of :func:`scored` and one row per ``keys`` with the counts summed over seeds (seed
    ``all``, ``seeds`` how many), each with precision and recall."""
    if per_seed.empty:
        return rates(per_seed.assign(seeds=pd.Series(dtype=int)))
    means = {"auroc": ("auroc", "mean")} if "auroc" in per_seed.columns else {}
    sums = per_seed.groupby(list(keys), as_index=False, sort=False).agg(
        **{c: (c, "sum") for c in COUNTS if c in per_seed.columns}, **means,
        seeds=("seed", "nunique")).assign(seed=ALL_SEEDS)
    return rates(pd.concat([per_seed.astype({"seed": object}).assign(seeds=1), sums], ignore_index=True))


def curves(maps: Mapping[str, pd.DataFrame], certified: pd.DataFrame,
           decoys: pd.DataFrame | None = None) -> pd.DataFrame:
    """Precision, recall, decoy false-positive rate and AUROC of every map at every checkpoint it has, per seed and
    pooled over seeds."""
    return pooled(scored(maps, certified, decoys=decoys), ["method", "model", "step"])


def stage2_by_step(heads: pd.DataFrame, best: pd.DataFrame, score: str, n_perm: int, seed: int,
                   final: pd.DataFrame | None = None) -> pd.DataFrame:
    """Stage 2's statistics had training stopped at each checkpoint (from the ``MIN_STEPS``-th on): :func:`discover`
    on the trajectories up to that step, its ``step`` column that checkpoint. ``final``: stage 2's own statistics
    (on every step), used for the last instead of computing them again."""
    steps = sorted(set(heads["step"]) & set(best["step"]))[MIN_STEPS - 1:]
    todo = steps[:-1] if final is not None else steps
    out = [discover(heads[heads["step"] <= s], best[best["step"] <= s], score=score, n_perm=n_perm,
                    seed=seed).assign(step=s) for s in todo]
    if final is not None and steps:
        out.append(final.drop(columns=["rule"], errors="ignore").assign(step=steps[-1]))
    return pd.concat(out, ignore_index=True)


# per stage 2 test column of RULES: the (slope, p) columns whose signed -log10 p ranks heads by that test (no slope:
# the p is one-tailed already)
EVIDENCE = {"selected": ("slope", "p"), "diff_ok": ("slope_diff", "p_diff"), "beats_prev": (None, "p_prev")}


def rule_score(stats: pd.DataFrame, rule: str) -> pd.Series:
    """A threshold-free score of each head under one of stage 2's rules: per test the rule asks for, the signed
    evidence ``sign(slope) * -log10(p)`` (``-log10(p)`` for the one-tailed previous-token test), and of those the
    weakest, since a head passes only when it passes every test."""
    parts = []
    for test in RULES[rule]:
        slope, p = EVIDENCE[test]
        evidence = -np.log10(stats[p].clip(lower=1e-300))
        parts.append(evidence * np.sign(stats[slope]) if slope else evidence)
    return pd.concat(parts, axis=1).min(axis=1)


def rule_maps(stats: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each of stage 2's selection rules (:data:`~lexprobe.analysis.selection.RULES`) as a head map of ``stats``
    (which has a step column), by title, scored by :func:`rule_score`."""
    return {RULE_TITLES[rule]: stats.assign(significant=passing(stats, rule), score=rule_score(stats, rule))
            for rule in RULES}


def rank_within(table: pd.DataFrame, column: str) -> pd.Series:
    """``column`` as a percentile rank (0-1] within each (model, seed, step) of ``table``."""
    return table.groupby(["model", "seed", "step"])[column].rank(pct=True)


def carrier_steps(per_head: pd.DataFrame) -> pd.DataFrame:
    """Per planted head: the first checked step from which the per-head construct check certifies it at every later
    checked step (``carrier_step``; NaN if not at the last), and at how many checked steps it was certified."""
    rows = []
    for (model, sd, layer, head), g in per_head.sort_values("step").groupby(["model", "seed", "layer", "head"]):
        ok = g["certified"].to_numpy(bool)
        rows.append({"model": model, "seed": int(sd), "layer": int(layer), "head": int(head),
                     "carrier_step": float(stays_from(g["step"].to_numpy(), ok)),
                     "certified_at": int(ok.sum()), "checked_steps": len(g)})
    return pd.DataFrame(rows, columns=["model", "seed", "layer", "head", "carrier_step", "certified_at",
                                       "checked_steps"])


def lags(first: pd.DataFrame, carriers: pd.DataFrame) -> pd.DataFrame:
    """The first-significant table (with ``opens_step`` and ``detected_from_step``) beside each head's
    ``carrier_step``: how many steps after its planted opening (``lag_steps``) and after it became a carrier
    (``lag_after_carrier``) each map detects it for good (a head that flickers in and out counts from its last
    return)."""
    out = first.merge(carriers[["model", "seed", "layer", "head", "carrier_step"]], how="left",
                      on=["model", "seed", "layer", "head"])
    return out.assign(lag_steps=out["detected_from_step"] - out["opens_step"],
                      lag_after_carrier=out["detected_from_step"] - out["carrier_step"])


def planted_type(plant: Mapping) -> str:
    """What a plant builds: ``single`` (one designated head), ``OR`` (one designated head open per sequence) or
    ``joint`` (every designated head open in every sequence: neither an AND nor an OR by design)."""
    if int(plant.get("n_heads", 2)) == 1:
        return "single"
    return "OR" if plant.get("mode") == "one" else "joint"


def readings(per_head: pd.DataFrame, greedy: pd.DataFrame, planted: str) -> pd.DataFrame:
    """Per (model, seed): the planted type, the construct check's reading at the last checkpoint (what the organism
    learned), and the reading of the greedy sufficient set at its last checkpoint (a one-head set reads
    ``single``); whether the greedy reading matches what was learned, and, where the plant fixes one (single,
    OR), what was planted."""
    learned = at_last_checkpoint(per_head).groupby(["model", "seed"], as_index=False)["reading"].first()
    found = at_last_checkpoint(greedy[greedy["size"] > 0]) if len(greedy) else greedy
    found = found.assign(greedy_reading=np.where(found["size"] == 1, "single", found["reading"]))[
        ["model", "seed", "step", "set", "greedy_reading"]].rename(columns={"step": "greedy_step", "set": "greedy_set"})
    out = learned.rename(columns={"reading": "learned"}).merge(found, on=["model", "seed"], how="left")
    out.insert(2, "planted_type", planted)
    fixed = planted != "joint"
    return out.assign(learned_matches_planted=(out["learned"] == planted) if fixed else np.nan,
                      greedy_matches_learned=out["greedy_reading"] == out["learned"],
                      greedy_matches_planted=(out["greedy_reading"] == planted) if fixed else np.nan)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, NaN where b is 0."""
    return np.divide(a, b, out=np.full(len(a), np.nan), where=b > 0)


def _f1(tp: np.ndarray, found: np.ndarray, planted: np.ndarray) -> np.ndarray:
    """F1 from counts: 2 TP / (found + planted), NaN where both are 0."""
    return _ratio(2 * tp, found + planted)


def _interval(draws: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap draws (NaN, NaN when none is defined)."""
    if not np.isfinite(draws).any():
        return np.nan, np.nan
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])
    return float(lo), float(hi)


def rule_scores(units: pd.DataFrame, default: str = DEFAULT_RULE, draws: int = DRAWS, seed: int = 0) -> pd.DataFrame:
    """Per method (``units``: one row per method and (profile, model, seed) with the counts of :func:`scored`):
    precision, recall, F1 and the decoy false-positive rate pooled over the units (counts summed), and the mean
    per-unit AUROC, each with a 95% interval from a bootstrap over units (the same draws for every method, so that
    differences are paired), and F1 minus the default method's with its interval. A unit where a method has no row
    (it was not measured there) does not count for it."""
    index = ["profile", "model", "seed"]
    cols = [c for c in (*COUNTS, "auroc") if c in units.columns]
    wide = {c: units.pivot_table(index=index, columns="method", values=c, dropna=False) for c in cols}
    n = len(wide["planted"])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(draws, n))
    boot: dict[str, dict[str, np.ndarray]] = {}
    rows = []
    order = list(RULE_TITLES.values())
    for rule in sorted(wide["planted"].columns, key=lambda r: order.index(r) if r in order else len(order)):
        col = {c: np.nan_to_num(wide[c][rule].to_numpy(float)) for c in COUNTS if c in wide}
        measured = np.isfinite(wide["planted"][rule].to_numpy(float))

        def measures(idx: np.ndarray | slice, col: dict[str, np.ndarray] = col, rule: str = rule) -> dict:
            t, f, p = (col[c][idx].sum(-1) for c in ("true_positives", "found", "planted"))
            out = {"precision": _ratio(np.atleast_1d(t), np.atleast_1d(f)),
                   "recall": _ratio(np.atleast_1d(t), np.atleast_1d(p)),
                   "f1": _f1(np.atleast_1d(t), np.atleast_1d(f), np.atleast_1d(p))}
            if "decoys" in col:
                out["decoy_fpr"] = _ratio(np.atleast_1d(col["decoys_found"][idx].sum(-1)),
                                          np.atleast_1d(col["decoys"][idx].sum(-1)))
            if "auroc" in wide:
                a = np.atleast_2d(wide["auroc"][rule].to_numpy(float)[idx])
                defined = np.isfinite(a).sum(-1)
                out["auroc"] = _ratio(np.nansum(a, -1), defined.astype(float))  # mean over units with one
            return out

        boot[rule] = measures(picks)
        point = {k: float(v[0]) for k, v in measures(slice(None)).items()}
        row: dict[str, object] = {"rule": rule, "default": rule == default, "units": int(measured.sum()),
                                  **{c: int(col[c].sum()) for c in COUNTS if c in col}}
        for k, v in point.items():
            lo, hi = _interval(boot[rule][k])
            row.update({k: v, f"{k}_low": lo, f"{k}_high": hi})
        rows.append(row)
    out = pd.DataFrame(rows)
    if default in boot:
        base = out.set_index("rule").loc[default, "f1"]
        diffs = {r: _interval(boot[r]["f1"] - boot[default]["f1"]) for r in boot}
        out["f1_minus_default"] = out["f1"] - base
        out["f1_minus_default_low"] = [diffs[r][0] for r in out["rule"]]
        out["f1_minus_default_high"] = [diffs[r][1] for r in out["rule"]]
    return out


def choose_and_confirm(units: pd.DataFrame, n_choose: int = 2, default: str = DEFAULT_RULE, draws: int = DRAWS,
                       seed: int = 0, candidates: Sequence[str] | None = None) -> tuple[pd.DataFrame, str]:
    """The method comparison on the first ``n_choose`` seeds of every profile (``choose``), the rest (``confirm``)
    and all, and the verdict. The protocol, fixed before the confirming seeds are scored: on the choosing seeds, the
    method among ``candidates`` (default: every method of ``units``) with the highest F1 whose F1 beats the
    default's (lower end of the paired interval above 0) is chosen; it replaces the default only if it beats it on
    the confirming seeds too."""
    if n_choose < 1:
        raise ValueError(f"choose a rule on at least 1 seed per profile, not {n_choose}")
    rank = units.groupby("profile")["seed"].rank(method="dense")
    split = np.where(rank <= n_choose, "choose", "confirm")
    parts = {"choose": units[split == "choose"], "confirm": units[split == "confirm"], "all": units}
    table = pd.concat([rule_scores(u, default, draws, seed).assign(
        split=name, seeds=" ".join(f"{p}:{','.join(map(str, sorted(set(g['seed']))))}"
                                   for p, g in u.groupby("profile")))
        for name, u in parts.items() if len(u)], ignore_index=True)
    pool = table["rule"].isin(candidates) if candidates is not None else pd.Series(True, index=table.index)
    chosen = table[pool & (table["split"] == "choose") & ~table["default"] & (table["f1_minus_default_low"] > 0)]
    if chosen.empty:
        return table, f"keep the default ({default}): nothing beats it on the choosing seeds"
    rule = str(chosen.sort_values("f1", ascending=False)["rule"].iloc[0])
    confirm = table[(table["split"] == "confirm") & (table["rule"] == rule)]
    if confirm.empty:
        return table, (f"{rule} beats the default ({default}) on the choosing seeds; no seeds are left to confirm "
                       "it on (train more: --seeds N): keep the default")
    if float(confirm["f1_minus_default_low"].iloc[0]) > 0:
        return table, f"{rule} beats the default ({default}) on the choosing seeds and is confirmed on the others"
    return table, (f"{rule} beats the default ({default}) on the choosing seeds but is not confirmed on the others: "
                   "keep the default")
