"""Stage 3 statistics: do heads keep attending to the cue when it moves, and does disambiguation survive?

Inputs are tidy tables: the engine's per-sentence head table for the intact set and for each perturbed set (a
``perturbation`` column names the set; perturbed sentences carry ``source_id`` and a ``control_attn`` column,
the attention to the position-matched control word; see :mod:`lexprobe.stimuli.perturb`), and best-layer scores per set.

Per (perturbation, model, seed, step, layer, head), :func:`head_robustness` gives the head's mean cue attention on
the source sentences intact, on the perturbed sentences, and to the control word, and a paired one-sided test over
sentences:

* ``separate`` / ``frame`` (the cue moved): perturbed cue attention > attention to the control word now standing
  where the cue stood (``test = cue>control``): "still attends to the cue", not "attends to that position";
* ``neutral`` (the cue replaced by a sense-neutral modifier): intact cue attention > attention to the neutral word
  (``test = informative>neutral``): "attends to the informative cue", not "to whatever modifier stands there".

BH-FDR runs over the heads and perturbations of each (model, seed, step); ``passes`` means q < .05. The moved
cues are perturbations (``role = perturbation``): a head that passes is ``robust``. ``neutral`` is a control
(``role = control``): it removes the cue, so nothing can be robust to it; a head that passes is ``cue_specific``
(it attends to the informative cue, not to whatever modifier stands there), and its ``robust`` is left empty.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lexprobe.analysis.primitives import bh_within
from lexprobe.analysis.selection import ALPHA
from lexprobe.base.lazy import stats

KEYS = ["model", "seed", "step", "layer", "head"]


def _nanmean(x: np.ndarray) -> np.floating:
    """Mean of the non-NaN values (NaN if none) as pandas' ``Series.mean`` computes it: sum and count in the
    column's own float type."""
    nan = np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(nan, x.dtype.type(0), x).sum() / x.dtype.type((~nan).sum())


def paired_p(diffs: list[np.ndarray]) -> np.ndarray:
    """One-sided p of a paired t-test (mean difference > 0) per array of differences, non-finite ones dropped;
    fewer than 2 differences or no spread: 0 if they are positive on average, else 1. Arrays of one length are
    tested in one vectorised call (row by row the same arithmetic as one call per array)."""
    out = np.ones(len(diffs))
    by_len: dict[int, list[int]] = {}
    kept = [d[np.isfinite(d)] for d in diffs]
    for i, d in enumerate(kept):
        if len(d) < 2 or d.std() == 0:
            out[i] = 0.0 if len(d) and d.mean() > 0 else 1.0
        else:
            by_len.setdefault(len(d), []).append(i)
    for idx in by_len.values():
        out[idx] = stats.ttest_1samp(np.stack([kept[i] for i in idx]), 0.0, axis=1, alternative="greater").pvalue
    return out


def head_robustness(intact: pd.DataFrame, perturbed: pd.DataFrame) -> pd.DataFrame:
    """Per perturbation and head: intact / perturbed cue attention, control attention, retained share, test."""
    base = intact.rename(columns={"sentence_id": "source_id", "cue_attn": "cue_intact"})[
        [*KEYS, "source_id", "cue_intact"]]
    merged = perturbed.merge(base, on=[*KEYS, "source_id"], how="inner", validate="many_to_one")
    groups = ["perturbation", "operation", *KEYS]
    merged = merged.sort_values(groups, kind="stable")  # each group's rows contiguous, in their original order
    sizes = merged.groupby(groups, sort=False).size()
    bounds = np.concatenate([[0], np.cumsum(sizes.to_numpy())])
    ci_all, cue_all, ctl_all = (merged[c].to_numpy() for c in ("cue_intact", "cue_attn", "control_attn"))
    rows, diffs = [], []
    for (pert, op, *key), lo, hi in zip(sizes.index, bounds[:-1], bounds[1:]):
        neutral = op == "neutral"
        ci, cue, ctl = ci_all[lo:hi], cue_all[lo:hi], ctl_all[lo:hi]
        diffs.append(ci.astype(float) - cue.astype(float) if neutral else cue.astype(float) - ctl.astype(float))
        mean_ci, mean_cue = _nanmean(ci), _nanmean(cue)
        rows.append({"perturbation": pert, "operation": op, **dict(zip(KEYS, key)), "n_sentences": hi - lo,
                     "cue_intact": mean_ci, "cue_perturbed": mean_cue, "control": _nanmean(ctl),
                     "retained": mean_cue / mean_ci if mean_ci > 0 else np.nan,
                     "test": "informative>neutral" if neutral else "cue>control",
                     "role": "control" if neutral else "perturbation"})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p"] = paired_p(diffs)
    out["q"] = bh_within(out, "p", ["model", "seed", "step"])
    out["passes"] = out["q"] < ALPHA
    control = out["role"] == "control"
    out["robust"] = out["passes"].astype(object).where(~control, None)
    out["cue_specific"] = out["passes"].astype(object).where(control, None)
    return out


def retained_performance(best: pd.DataFrame, scores: tuple[str, ...] = ("r2", "auc")) -> pd.DataFrame:
    """Best-layer scores of each perturbation next to the intact set's at the same checkpoint, with the share of
    the intact R^2 kept (``best`` has a ``perturbation`` column; ``intact`` marks the source set).

    A perturbed set whose own words differ between senses (e.g. frames written per sense) separates the senses
    before any training; so each set's score at its first measured checkpoint (step 0 in a full suite) is its
    ``r2_baseline``, and ``r2_retained_net`` is the share of the intact gain over its own baseline that the
    perturbed set's gain over its baseline keeps: (r2 - r2_baseline) / (r2_intact - r2_intact_baseline)."""
    keys = ["model", "seed", "step"]
    base = best[best["perturbation"] == "intact"].set_index(keys)[list(scores)]
    out = best[best["perturbation"] != "intact"].join(base, on=keys, rsuffix="_intact")
    out["r2_retained"] = out["r2"] / out["r2_intact"]
    first = best.sort_values("step").groupby(["perturbation", "model", "seed"])["r2"].first()
    out["r2_baseline"] = first.reindex(pd.MultiIndex.from_frame(out[["perturbation", "model", "seed"]])).to_numpy()
    intact_first = first.xs("intact", level="perturbation")
    out["r2_intact_baseline"] = intact_first.reindex(pd.MultiIndex.from_frame(out[["model", "seed"]])).to_numpy()
    out["r2_retained_net"] = (out["r2"] - out["r2_baseline"]) / (out["r2_intact"] - out["r2_intact_baseline"])
    return out.reset_index(drop=True)
