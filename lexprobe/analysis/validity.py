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

from lexprobe.analysis.detection import check_map, pooled, scored
from lexprobe.analysis.patchmaps import reading
from lexprobe.analysis.primitives import at_last_checkpoint, stays_from
from lexprobe.base.heads import head_name

MIN_PLANTED = 0.8  # cutting the planted heads' edges must remove at least this share of best-layer R^2
MAX_OTHERS = 0.2  # cutting the same edges in every other head may remove at most this share
NOTHING = 0.2  # a planted set that keeps and removes less than this share of the intact R^2 carries nothing
DECOY_MAX = 0.05  # a decoy is empty when, cut alone or left alone open, it moves less than this share of what the
# target->cue edges of all heads carry


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
    """Per planted head at each (model, seed, step) of ``best``, as shares of what the target->cue edges of all
    heads carry (``edges_carry``: the intact ``score`` minus its value with every head's edges cut, condition
    ``all``, as a share of the intact one): ``removed_when_cut`` (cutting its edges alone: ``cut:LxHy``) and
    ``kept_alone`` (only it keeps them: ``alone:LxHy``). Per seed, the ``reading`` of the planted set: ``single``
    when one member carries the cue and the others add nothing, ``none`` when the edges or the planted set carry
    less than ``NOTHING``, else :func:`~lexprobe.analysis.patchmaps.reading` of the members against the whole set's
    cuts (``planted``, ``others``). Across training, the edges must carry at least ``NOTHING`` of the seed's intact
    score at its last checkpoint (or at this step, if higher): before the rise, R^2 is noise. A head is
    ``certified`` when it carries: alone it keeps at least half of what the set keeps, or cut it removes at least
    half of what cutting the set removes."""
    rows = []
    final = at_last_checkpoint(best[best["condition"] == "intact"]).set_index(["model", "seed"])[score]
    for (model, sd, step), g in best.groupby(["model", "seed", "step"]):
        r2 = g.set_index("condition")[score]
        intact, floor = float(r2["intact"]), float(r2.get("all", np.nan))
        reference = max(intact, float(final.get((model, sd), intact)))  # before the rise, R^2 is noise
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
        edges_carry = margin > NOTHING * reference if reference > 0 else False
        set_carries = joint_kept >= NOTHING or joint_removed >= NOTHING
        how = reading(kept, removed, joint_kept, joint_removed) if edges_carry and set_carries else "none"
        if how != "none" and sum(carries.values()) == 1:
            how = "single"
        for h in heads:
            rows.append({"model": model, "seed": int(sd), "step": int(step), "layer": h[0], "head": h[1],
                         "edges_carry": margin / intact if intact > 0 else np.nan,
                         "removed_when_cut": removed[h], "kept_alone": kept[h], "set_removed": joint_removed,
                         "set_kept": joint_kept, "reading": how, "certified": carries[h] and how != "none"})
    return pd.DataFrame(rows)


def decoy_check(best: pd.DataFrame, decoys: pd.DataFrame, score: str = "r2") -> pd.DataFrame:
    """Per decoy head at each (model, seed, step) of ``best``: ``removed_when_cut`` (its edges alone cut:
    ``cut:LxHy``) and ``kept_alone`` (only it keeps them: ``alone:LxHy``) as shares of what the target->cue edges
    of all heads carry (as in :func:`per_head_check`); ``judged`` where those edges carry at least ``NOTHING`` of
    the seed's final score (before that there is nothing a decoy could carry); ``empty`` where it is not judged or
    both shares are under ``DECOY_MAX`` in size; and per head ``certified_empty``: empty at every checked step.
    A decoy that is not certified empty carries something and is no decoy."""
    cols = ["model", "seed", "step", "layer", "head", "kind", "edges_carry", "removed_when_cut", "kept_alone",
            "judged", "empty"]
    rows = []
    final = at_last_checkpoint(best[best["condition"] == "intact"]).set_index(["model", "seed"])[score]
    for (model, sd, step), g in best.groupby(["model", "seed", "step"]):
        r2 = g.set_index("condition")[score]
        intact, floor = float(r2["intact"]), float(r2.get("all", np.nan))
        margin = intact - floor
        judged = margin > NOTHING * max(intact, float(final.get((model, sd), intact)))
        for d in decoys[(decoys["model"] == model) & (decoys["seed"] == sd)].itertuples():
            name = head_name(int(d.layer), int(d.head))
            kept = (float(r2.get(f"alone:{name}", np.nan)) - floor) / margin if margin > 0 else np.nan
            removed = (intact - float(r2.get(f"cut:{name}", np.nan))) / margin if margin > 0 else np.nan
            empty = not judged or bool(abs(kept) < DECOY_MAX and abs(removed) < DECOY_MAX)
            rows.append({"model": model, "seed": int(sd), "step": int(step), "layer": int(d.layer),
                         "head": int(d.head), "kind": d.kind, "edges_carry": margin / intact if intact > 0 else np.nan,
                         "removed_when_cut": removed, "kept_alone": kept, "judged": bool(judged), "empty": empty})
    out = pd.DataFrame(rows, columns=cols)
    return out.assign(certified_empty=out.groupby(["model", "seed", "layer", "head"])["empty"].transform("all"))


def validity(maps: Mapping[str, pd.DataFrame], certified: pd.DataFrame,
             decoys: pd.DataFrame | None = None) -> pd.DataFrame:
    """Precision, recall, the decoy false-positive rate (``decoys``: the certified-empty decoy heads) and the
    threshold-free AUROC of each map at its last checkpoint against ``certified`` (columns model, seed, layer,
    head), per (method, model, seed), and a row per method pooled over seeds (seed ``all``: counts summed, AUROC
    averaged). Precision is NaN where a map finds no head."""
    return pooled(scored(maps, certified, last_only=True, decoys=decoys), ["method", "model"])


def first_significant(maps: Mapping[str, pd.DataFrame], planted: pd.DataFrame) -> pd.DataFrame:
    """Per (method, model, seed, planted head): the first checkpoint at which the map marks the head significant
    (NaN if at none), the first from which it stays significant at every later checkpoint of the map
    (``detected_from_step``; NaN if not at the last), and at how many of the map's checkpoints it is."""
    rows = []
    for method, table in maps.items():
        check_map(method, table)
        for r in planted.itertuples():
            g = table[(table["model"] == r.model) & (table["seed"] == r.seed) & (table["layer"] == r.layer)
                      & (table["head"] == r.head)]
            g = g.sort_values("step")
            sig = g.loc[g["significant"].astype(bool), "step"]
            rows.append({"method": method, "model": r.model, "seed": int(r.seed), "layer": int(r.layer),
                         "head": int(r.head), "first_significant_step": float(sig.min()) if len(sig) else np.nan,
                         "detected_from_step": float(stays_from(g["step"].to_numpy(), g["significant"].to_numpy())),
                         "significant_at": len(sig), "checkpoints": g["step"].nunique()})
    return pd.DataFrame(rows)
