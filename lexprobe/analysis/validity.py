"""Validation against a planted circuit: is the planted head set what carries the cue, and do the pipeline's head
maps find it?

* :func:`construct_check`: per (model, seed) at the last checkpoint, the share of the intact best-layer R^2 removed
  by cutting the target->cue edges of the planted heads (must be at least ``MIN_PLANTED``) and of all the other
  heads (at most ``MAX_OTHERS``). Only a seed that passes has a planted set that can be called ground truth.
* :func:`validity`: per head map (any table with columns model, seed, step, layer, head, significant) and seed, the
  precision and recall of the map's significant heads at the last checkpoint against the planted set, plus one row
  pooled over the seeds (counts summed) per map.
* :func:`first_significant`: per map and planted head, the first checkpoint at which the head is significant.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from lexprobe.analysis.primitives import at_last_checkpoint

MIN_PLANTED = 0.8  # cutting the planted heads' edges must remove at least this share of best-layer R^2
MAX_OTHERS = 0.2  # cutting the same edges in every other head may remove at most this share
MAP_COLUMNS = ("model", "seed", "step", "layer", "head", "significant")
ALL_SEEDS = "all"


def _names(heads: set[tuple[int, int]]) -> str:
    return " ".join(f"L{layer}H{head}" for layer, head in sorted(heads))


def construct_check(best: pd.DataFrame, score: str = "r2") -> pd.DataFrame:
    """Per (model, seed) at its last checkpoint: best-layer ``score`` intact (condition ``intact``), with the
    planted heads' target->cue edges cut (``planted``) and with those edges cut in every other head (``others``);
    the shares removed and whether the seed passes (removed_planted >= MIN_PLANTED, removed_others <= MAX_OTHERS)."""
    need = {"intact", "planted", "others"}
    missing = need - set(best["condition"])
    if missing:
        raise ValueError(f"construct check: no best-layer rows for condition(s) {sorted(missing)}")
    last = at_last_checkpoint(best[best["condition"].isin(need)])
    wide = last.pivot_table(index=["model", "seed", "step"], columns="condition", values=score).reset_index()
    wide.columns.name = None
    out = wide.rename(columns={c: f"{score}_{c}" for c in need})
    intact = out[f"{score}_intact"]
    out["removed_planted"] = (intact - out[f"{score}_planted"]) / intact
    out["removed_others"] = (intact - out[f"{score}_others"]) / intact
    out["passes"] = (out["removed_planted"] >= MIN_PLANTED) & (out["removed_others"] <= MAX_OTHERS)
    return out


def _check_map(name: str, table: pd.DataFrame) -> None:
    missing = [c for c in MAP_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"head map {name!r} lacks column(s) {missing}; a map has columns {MAP_COLUMNS}")


def _planted_of(planted: pd.DataFrame) -> dict[tuple[str, int], set[tuple[int, int]]]:
    return {(str(m), int(s)): {(int(r.layer), int(r.head)) for r in g.itertuples()}
            for (m, s), g in planted.groupby(["model", "seed"])}


def validity(maps: Mapping[str, pd.DataFrame], planted: pd.DataFrame) -> pd.DataFrame:
    """Precision and recall of each map's significant heads at its last checkpoint against ``planted`` (columns
    model, seed, layer, head), per (method, model, seed), and a row per method pooled over seeds (seed ``all``:
    true positives, found and planted heads summed). Precision is NaN where a map finds no head."""
    truth = _planted_of(planted)
    rows = []
    for method, table in maps.items():
        _check_map(method, table)
        for (model, sd), g in table.groupby(["model", "seed"]):
            at = at_last_checkpoint(g)
            found = {(int(r.layer), int(r.head)) for r in at.itertuples() if r.significant}
            want = truth.get((str(model), int(sd)), set())
            rows.append({"method": method, "model": model, "seed": int(sd), "step": int(at["step"].iloc[0]),
                         "planted": len(want), "found": len(found), "true_positives": len(found & want),
                         "planted_heads": _names(want), "found_heads": _names(found)})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    pooled = out.groupby(["method", "model"], as_index=False, sort=False)[
        ["planted", "found", "true_positives"]].sum().assign(seed=ALL_SEEDS, planted_heads="", found_heads="")
    out = pd.concat([out.astype({"seed": object}), pooled], ignore_index=True)
    out["precision"] = out["true_positives"] / out["found"].replace(0, np.nan)
    out["recall"] = out["true_positives"] / out["planted"].replace(0, np.nan)
    return out


def first_significant(maps: Mapping[str, pd.DataFrame], planted: pd.DataFrame) -> pd.DataFrame:
    """Per (method, model, seed, planted head): the first checkpoint at which the map marks the head significant
    (NaN if at none), and at how many of the map's checkpoints it is."""
    rows = []
    for method, table in maps.items():
        _check_map(method, table)
        for r in planted.itertuples():
            g = table[(table["model"] == r.model) & (table["seed"] == r.seed) & (table["layer"] == r.layer)
                      & (table["head"] == r.head)]
            sig = g.loc[g["significant"].astype(bool), "step"]
            rows.append({"method": method, "model": r.model, "seed": int(r.seed), "layer": int(r.layer),
                         "head": int(r.head), "first_significant_step": float(sig.min()) if len(sig) else np.nan,
                         "significant_at": len(sig), "checkpoints": g["step"].nunique()})
    return pd.DataFrame(rows)
