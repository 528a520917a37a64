"""Validation against a planted circuit: is the planted head set what carries the cue, and do the pipeline's head
maps find it?

* :func:`construct_check`: per (model, seed) at the last checkpoint, the share of the intact best-layer R^2 removed
  by cutting the target->cue edges of the planted heads (must be at least ``MIN_PLANTED``) and of all the other
  heads (at most ``MAX_OTHERS``). Only a seed that passes has a planted set that can be called ground truth.
* :func:`per_head_check`: per planted head, the share of intact R^2 removed when its edges alone are cut and the
  share kept when it alone is left open (every other head cut); per seed, what the organism learned (single carrier,
  OR, AND, distributed, mixed, none: :func:`lexprobe.analysis.patchmaps.reading`) and which planted heads carry the
  cue (``certified``), the truth the maps are scored against.
* :func:`validity`: per head map (any table with columns model, seed, step, layer, head, significant) and seed, the
  precision and recall of the map's significant heads at the last checkpoint against the planted set, plus one row
  pooled over the seeds (counts summed) per map.
* :func:`first_significant`: per map and planted head, the first checkpoint at which the head is significant.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from lexprobe.analysis.patchmaps import reading
from lexprobe.analysis.primitives import at_last_checkpoint

MIN_PLANTED = 0.8  # cutting the planted heads' edges must remove at least this share of best-layer R^2
MAX_OTHERS = 0.2  # cutting the same edges in every other head may remove at most this share
NOTHING = 0.2  # a planted set that keeps and removes less than this share of the intact R^2 carries nothing
MAP_COLUMNS = ("model", "seed", "step", "layer", "head", "significant")
ALL_SEEDS = "all"


def head_name(layer: int, head: int) -> str:
    """A head as the reports write it: L3H1."""
    return f"L{layer}H{head}"


def _names(heads: set[tuple[int, int]]) -> str:
    return " ".join(head_name(layer, head) for layer, head in sorted(heads))


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


def per_head_check(best: pd.DataFrame, planted: pd.DataFrame, score: str = "r2") -> pd.DataFrame:
    """Per planted head at each (model, seed)'s last checkpoint, as shares of what the target->cue edges of all
    heads carry (``edges_carry``: the intact ``score`` minus its value with every head's edges cut, condition
    ``all``, as a share of the intact one): ``removed_when_cut`` (cutting its edges alone: ``cut:LxHy``) and
    ``kept_alone`` (only it keeps them: ``alone:LxHy``). Per seed, the ``reading`` of the planted set: ``single``
    when one member carries the cue and the others add nothing, ``none`` when the edges or the planted set carry
    less than ``NOTHING``, else :func:`~lexprobe.analysis.patchmaps.reading` of the members against the whole set's
    cuts (``planted``, ``others``). A head is ``certified`` when it carries: alone it keeps at least half of what
    the set keeps, or cut it removes at least half of what cutting the set removes."""
    last = at_last_checkpoint(best)
    rows = []
    for (model, sd), g in last.groupby(["model", "seed"]):
        r2 = g.set_index("condition")[score]
        intact, floor = float(r2["intact"]), float(r2.get("all", np.nan))
        margin = intact - floor  # what the target->cue edges of all heads carry
        heads = [(int(x.layer), int(x.head)) for x in planted[(planted["model"] == model)
                                                               & (planted["seed"] == sd)].itertuples()]

        def share(condition: str, r2: pd.Series = r2, floor: float = floor, margin: float = margin) -> float:
            return (float(r2.get(condition, np.nan)) - floor) / margin if margin > 0 else np.nan

        one = len(heads) == 1  # a single planted head: its own cuts are the set's
        kept = {h: share("others" if one else f"alone:{head_name(*h)}") for h in heads}
        removed = {h: 1 - share("planted" if one else f"cut:{head_name(*h)}") for h in heads}
        joint_kept, joint_removed = share("others"), 1 - share("planted")
        carries = {h: bool(kept[h] >= 0.5 * joint_kept or removed[h] >= 0.5 * joint_removed) for h in heads}
        edges_carry = margin > NOTHING * intact if intact > 0 else False
        set_carries = joint_kept >= NOTHING or joint_removed >= NOTHING
        how = reading(kept, removed, joint_kept, joint_removed) if edges_carry and set_carries else "none"
        if how != "none" and sum(carries.values()) == 1:
            how = "single"
        for h in heads:
            rows.append({"model": model, "seed": int(sd), "step": int(g["step"].iloc[0]), "layer": h[0], "head": h[1],
                         "edges_carry": margin / intact if intact > 0 else np.nan,
                         "removed_when_cut": removed[h], "kept_alone": kept[h], "set_removed": joint_removed,
                         "set_kept": joint_kept, "reading": how, "certified": carries[h] and how != "none"})
    return pd.DataFrame(rows)


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
