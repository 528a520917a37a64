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
COUNTS = ["planted", "found", "true_positives"]
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


def scored(maps: Mapping[str, pd.DataFrame], certified: pd.DataFrame, last_only: bool = False) -> pd.DataFrame:
    """Per (method, model, seed, step) of each map (its last step alone with ``last_only``): how many heads it should
    name (``planted``), names (``found``) and names rightly (``true_positives``), and which."""
    truth = truth_of(certified)
    rows = []
    for method, table in maps.items():
        check_map(method, table)
        at = at_last_checkpoint(table) if last_only and len(table) else table
        for (model, sd, step), g in at.groupby(["model", "seed", "step"]):
            found = {(int(r.layer), int(r.head)) for r in g.itertuples() if r.significant}
            want = truth(model, sd, step)
            rows.append({"method": method, "model": model, "seed": int(sd), "step": int(step), "planted": len(want),
                         "found": len(found), "true_positives": len(found & want),
                         "planted_heads": heads_name(sorted(want)), "found_heads": heads_name(sorted(found))})
    return pd.DataFrame(rows, columns=["method", "model", "seed", "step", *COUNTS, "planted_heads", "found_heads"])


def rates(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with precision (NaN where nothing is found) and recall (NaN where nothing is planted)."""
    return table.assign(precision=table["true_positives"] / table["found"].replace(0, np.nan),
                        recall=table["true_positives"] / table["planted"].replace(0, np.nan))


def pooled(per_seed: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The per-seed rows of :func:`scored` and one row per ``keys`` with the counts summed over seeds (seed
    ``all``, ``seeds`` how many), each with precision and recall."""
    if per_seed.empty:
        return rates(per_seed.assign(seeds=pd.Series(dtype=int)))
    sums = per_seed.groupby(list(keys), as_index=False, sort=False).agg(
        **{c: (c, "sum") for c in COUNTS}, seeds=("seed", "nunique")).assign(seed=ALL_SEEDS)
    return rates(pd.concat([per_seed.astype({"seed": object}).assign(seeds=1), sums], ignore_index=True))


def curves(maps: Mapping[str, pd.DataFrame], certified: pd.DataFrame) -> pd.DataFrame:
    """Precision and recall of every map at every checkpoint it has, per seed and pooled over seeds."""
    return pooled(scored(maps, certified), ["method", "model", "step"])


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


def rule_maps(stats: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each of stage 2's selection rules (:data:`~lexprobe.analysis.selection.RULES`) as a head map of ``stats``
    (which has a step column), by title."""
    return {RULE_TITLES[rule]: stats.assign(significant=passing(stats, rule)) for rule in RULES}


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


def rule_scores(units: pd.DataFrame, default: str = DEFAULT_RULE, draws: int = DRAWS, seed: int = 0) -> pd.DataFrame:
    """Per rule (``units``: one row per rule and (profile, model, seed) with the counts of :func:`scored`): precision,
    recall and F1 pooled over the units, each with a 95% interval from a bootstrap over units (the same draws for
    every rule, so that differences are paired), and F1 minus the default rule's with its interval."""
    wide = {c: units.pivot_table(index=["profile", "model", "seed"], columns="method", values=c) for c in COUNTS}
    n = len(wide["planted"])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(draws, n))
    boot: dict[str, dict[str, np.ndarray]] = {}
    rows = []
    order = list(RULE_TITLES.values())
    for rule in sorted(wide["planted"].columns, key=lambda r: order.index(r) if r in order else len(order)):
        tp, found, planted = (wide[c][rule].to_numpy(float) for c in ("true_positives", "found", "planted"))
        t, f, p = tp[picks].sum(1), found[picks].sum(1), planted[picks].sum(1)
        b = {"precision": _ratio(t, f), "recall": _ratio(t, p), "f1": _f1(t, f, p)}
        boot[rule] = b
        t, f, p = np.array([tp.sum()]), np.array([found.sum()]), np.array([planted.sum()])
        point = {"precision": _ratio(t, f)[0], "recall": _ratio(t, p)[0], "f1": _f1(t, f, p)[0]}
        row: dict[str, object] = {"rule": rule, "default": rule == default, "units": n, "planted": int(planted.sum()),
                                  "found": int(found.sum()), "true_positives": int(tp.sum())}
        for k, v in point.items():
            lo, hi = np.nanpercentile(b[k], [2.5, 97.5]) if np.isfinite(b[k]).any() else (np.nan, np.nan)
            row.update({k: v, f"{k}_low": lo, f"{k}_high": hi})
        rows.append(row)
    out = pd.DataFrame(rows)
    if default in boot:
        base = out.set_index("rule").loc[default, "f1"]
        diffs = {r: np.nanpercentile(boot[r]["f1"] - boot[default]["f1"], [2.5, 97.5]) for r in boot}
        out["f1_minus_default"] = out["f1"] - base
        out["f1_minus_default_low"] = [diffs[r][0] for r in out["rule"]]
        out["f1_minus_default_high"] = [diffs[r][1] for r in out["rule"]]
    return out


def choose_and_confirm(units: pd.DataFrame, n_choose: int = 2, default: str = DEFAULT_RULE, draws: int = DRAWS,
                       seed: int = 0) -> tuple[pd.DataFrame, str]:
    """The rule comparison on the first ``n_choose`` seeds of every profile (``choose``), the rest (``confirm``)
    and all, and the verdict. The rule, fixed before the confirming seeds are scored: on the choosing seeds, the
    rule with the highest F1 whose F1 beats the default's (lower end of the paired interval above 0) is chosen;
    it replaces the default only if it beats it on the confirming seeds too."""
    if n_choose < 1:
        raise ValueError(f"choose a rule on at least 1 seed per profile, not {n_choose}")
    rank = units.groupby("profile")["seed"].rank(method="dense")
    split = np.where(rank <= n_choose, "choose", "confirm")
    parts = {"choose": units[split == "choose"], "confirm": units[split == "confirm"], "all": units}
    table = pd.concat([rule_scores(u, default, draws, seed).assign(
        split=name, seeds=" ".join(f"{p}:{','.join(map(str, sorted(set(g['seed']))))}"
                                   for p, g in u.groupby("profile")))
        for name, u in parts.items() if len(u)], ignore_index=True)
    chosen = table[(table["split"] == "choose") & ~table["default"] & (table["f1_minus_default_low"] > 0)]
    if chosen.empty:
        return table, f"keep the default ({default}): no rule beats it on the choosing seeds"
    rule = str(chosen.sort_values("f1", ascending=False)["rule"].iloc[0])
    confirm = table[(table["split"] == "confirm") & (table["rule"] == rule)]
    if confirm.empty:
        return table, (f"{rule} beats the default ({default}) on the choosing seeds; no seeds are left to confirm "
                       "it on (train more: --seeds N): keep the default")
    if float(confirm["f1_minus_default_low"].iloc[0]) > 0:
        return table, f"{rule} beats the default ({default}) on the choosing seeds and is confirmed on the others"
    return table, (f"{rule} beats the default ({default}) on the choosing seeds but is not confirmed on the others: "
                   "keep the default")
