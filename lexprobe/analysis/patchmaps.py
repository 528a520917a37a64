"""Stage 4 patching statistics: necessity (noising) and sufficiency (denoising) maps, exactness, redundancy.

Inputs are pair-level distances of a patch map (:mod:`lexprobe.engine.patches`) with ``condition`` set to the patch's
name (``noise-none`` is the clean run, ``denoise-none`` the counterfactual run) and a patch table (name, direction,
unit: none | all | layer | head, layer, head). Per checkpoint, best-layer R^2 is computed for every patch under the
observed sample and paired item-bootstrap draws (:func:`lexprobe.analysis.nulls.best_r2_draws`):

* **necessity** of a patch: ``drop = R2(clean) - R2(noised)``, and its share of the clean R^2;
* **sufficiency**: ``gain = R2(denoised) - R2(counterfactual)``, and ``recovered = gain / (R2(clean) -
  R2(counterfactual))``, the share of the clean R^2 above the counterfactual baseline that the patch restores.
  The baseline is defined even when the counterfactual's distances are constant at every layer (e.g. both
  sentences of every pair neutralised to the same words): R^2 is then 0 (nothing explained), said by
  ``baseline_constant``; ``recovered`` is NaN where the clean run is no better than the counterfactual.

p is one-sided (effect > 0) from the normal approximation to the bootstrap (no rank floor), BH-FDR within
(model, seed, direction, unit) over heads (or layers) x checkpoints, as ``fdr_family`` says.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lexprobe.analysis.nulls import KEYS, best_r2_draws, effect_interval, with_fdr
from lexprobe.analysis.primitives import at_last_checkpoint

CLEAN, CORRUPT = "noise-none", "denoise-none"
PATCH_FAMILY = "heads (or layers) x checkpoints of one (model, seed, direction)"
EXACT_PATCH = 1e-6


def _defined(r2: np.ndarray) -> np.ndarray:
    """R^2 where no layer's distances vary (NaN or -inf from the best-layer rule) is 0: nothing is explained."""
    return np.where(np.isfinite(r2), r2, 0.0)


def patch_maps(pairs: pd.DataFrame, patches: pd.DataFrame, target: str = "same", n_boot: int = 200, seed: int = 0,
               by: str = "r2", rng: np.random.Generator | None = None) -> pd.DataFrame:
    """One row per (model, seed, step, patch) of unit head or layer: the effect with its bootstrap interval and p,
    the clean and counterfactual R^2, and BH q (see the module docstring). The draws come from ``rng`` when given
    (a generator shared by calls on consecutive (model, seed) parts draws what one call on them all would), else
    from ``seed``."""
    info = patches.set_index("name")
    rng = rng if rng is not None else np.random.default_rng(seed)
    rows = []
    for (model, sd, step), g in pairs.groupby(KEYS):
        names = [n for n in g["condition"].unique() if n in info.index and info.loc[n, "unit"] in ("head", "layer")]
        r2 = best_r2_draws(g, CLEAN, [CORRUPT, *names], target, n_boot, rng, by)
        clean, cf = _defined(r2[CLEAN]), _defined(r2[CORRUPT])
        constant = not np.isfinite(r2[CORRUPT][0])
        for name in names:
            p = info.loc[name]
            patched = _defined(r2[name])
            if p["direction"] == "noise":
                effect, share = clean - patched, (clean - patched) / np.where(clean > 0, clean, np.nan)
            else:
                room = clean - cf
                effect, share = patched - cf, (patched - cf) / np.where(room > 0, room, np.nan)
            rows.append({"model": model, "seed": sd, "step": step, "patch": name, "direction": p["direction"],
                         "unit": p["unit"], "layer": int(p["layer"]), "head": int(p["head"]),
                         "r2_clean": clean[0], "r2_counterfactual": cf[0], "baseline_constant": constant,
                         "r2_patched": patched[0], "share": share[0],
                         "share_low": np.nanquantile(share[1:], 0.025) if np.isfinite(share[1:]).any() else np.nan,
                         "share_high": np.nanquantile(share[1:], 0.975) if np.isfinite(share[1:]).any() else np.nan,
                         **effect_interval(effect, "effect")})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    return with_fdr(out, "effect", ["model", "seed", "direction", "unit"], PATCH_FAMILY)


def patch_exactness(pairs: pd.DataFrame, intact: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Per (model, seed, step) the positive controls, as max abs differences of pair distances (any layer) and of
    best-layer R^2: denoising every head vs the clean run, noising every head vs the counterfactual run, and the
    clean run (no patch, prefix-cached) vs the engine's intact measurement of the same pairs. ``best``: best-layer
    scores of the patch conditions and of ``intact`` (columns condition, model, seed, step, r2)."""
    keys = [*KEYS, "pair_id", "layer"]
    wide = pairs.pivot_table(index=keys, columns="condition", values="distance")
    base = intact.set_index(keys)["distance"].reindex(wide.index)
    r2 = best.pivot_table(index=KEYS, columns="condition", values="r2")
    checks = {"denoise_all_vs_clean": ("denoise-all", CLEAN), "noise_all_vs_counterfactual": ("noise-all", CORRUPT)}
    rows = []
    for (model, sd, step), w in wide.groupby(level=KEYS):
        row: dict = {"model": model, "seed": sd, "step": step}
        for name, (a, b) in checks.items():
            row[f"{name}_distance"] = float((w[a] - w[b]).abs().max())
            row[f"{name}_r2"] = float(abs(r2.loc[(model, sd, step), a] - r2.loc[(model, sd, step), b]))
        row["clean_vs_intact_distance"] = float((w[CLEAN] - base.loc[w.index]).abs().max())
        row["clean_vs_intact_r2"] = float(abs(r2.loc[(model, sd, step), CLEAN] - r2.loc[(model, sd, step), "intact"]))
        row["exact"] = bool(max(v for k, v in row.items() if k.endswith(("_distance", "_r2"))) <= EXACT_PATCH)
        rows.append(row)
    return pd.DataFrame(rows)


def first_patched(maps: pd.DataFrame) -> pd.DataFrame:
    """Per (model, seed, direction, layer, head): the first checkpoint at which the head is significant (NaN if
    never), over single-head patches."""
    heads = maps[maps["unit"] == "head"]
    sig = heads[heads["significant"]]
    first = sig.groupby(["model", "seed", "direction", "layer", "head"])["step"].min()
    out = heads[["model", "seed", "direction", "layer", "head"]].drop_duplicates().join(
        first.rename("first_step"), on=["model", "seed", "direction", "layer", "head"])
    return out.reset_index(drop=True)


def heads_at_last(maps: pd.DataFrame, direction: str) -> dict[tuple[str, int], set[tuple[int, int]]]:
    """Per (model, seed): the heads significant in ``direction``'s single-head map at the last checkpoint."""
    at = at_last_checkpoint(maps[(maps["unit"] == "head") & (maps["direction"] == direction)])
    return {(str(m), int(s)): {(int(r.layer), int(r.head)) for r in g.itertuples() if r.significant}
            for (m, s), g in at.groupby(["model", "seed"])}


def reading(single_recovered: dict[tuple[int, int], float], single_drop: dict[tuple[int, int], float],
            joint_recovered: float, joint_drop: float) -> str:
    """How a sufficient head set works, from point estimates ("alone": a member's own share is at least half of the
    set's): ``AND`` when removing any one member alone removes at least half of what removing the set removes;
    ``OR`` (redundant) when every member alone restores at least half of what the set restores and no removal does;
    ``distributed`` when no member alone does either (many small contributions); ``mixed`` otherwise; ``none``
    when the set neither restores nor removes anything."""
    if not single_recovered or not (joint_recovered > 0 or joint_drop > 0):
        return "none"
    alone = [v >= 0.5 * joint_recovered for v in single_recovered.values()] if joint_recovered > 0 else [False]
    needed = [v >= 0.5 * joint_drop for v in single_drop.values()] if joint_drop > 0 else [False]
    if all(needed):
        return "AND"
    if all(alone) and not any(needed):
        return "OR"
    if not any(alone) and not any(needed):
        return "distributed"
    return "mixed"
