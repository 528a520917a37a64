"""Pairwise patching: OR and AND read from noising and denoising together (protocol 3 of docs/validation.md).

A single-head noising map cannot see a member of a redundant (OR) pair: noised alone, its partner still carries the
cue. At one checkpoint, :class:`PairTests` noises and denoises every head alone (at the noun's tokens, against the
counterfactual set, as stage 4's patch maps do), takes the ``PAIR_TOP`` heads that rank highest by the larger of the
two shares, and noises and denoises each pair of them together. Per pair, with ``removed`` the share of the clean
best-layer R^2 a noising removes and ``recovered`` the share of the clean-minus-counterfactual gap a denoising
restores:

* ``OR``: the pair's joint noising removes at least ``PAIR_MIN`` while neither member alone removes half of it;
* ``AND``: the joint denoising restores at least ``PAIR_MIN`` while neither member alone restores half of it;
* ``joint``: both; ``one``: one member alone removes and restores at least ``ONE`` of what the pair does, the
  other under ``1 - ONE`` (one carrier, and a head that adds nothing); ``additive``: the pair moves at least
  ``PAIR_MIN`` either way otherwise; ``none``: less.

The interaction terms (joint minus the sum of the members' own shares) are reported beside the reading. The members
of an OR pair are what :func:`partners_map` adds to the single-head maps ("patching + pairs").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from lexprobe.analysis.patchmaps import CLEAN, CORRUPT
from lexprobe.analysis.performance import Scoring
from lexprobe.base.heads import Head, head_name, parse_head
from lexprobe.engine.conditions import Donor, Named
from lexprobe.engine.extract import ExtractConfig
from lexprobe.engine.patches import PATCH_PREP, PATCH_RUN, Patch, PatchRunner
from lexprobe.stages.patching import patch_scores
from lexprobe.stimuli.tables import Stimuli

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PAIR_TOP = 4  # heads ranked highest by the single-head shares whose pairs are tested
PAIR_MIN = 0.2  # the joint share a pair must move to be read as OR, AND, joint, one or additive
ONE = 0.8  # the share of the pair's effect one member carries alone in a pair read ``one``
PAIRS = ("pair_tests",)  # the store's table of a pair test
READINGS = ("OR", "AND", "joint", "one", "additive", "none")


def pair_reading(removed: tuple[float, float, float], recovered: tuple[float, float, float]) -> str:
    """A pair's reading from (member a, member b, both) removed and recovered shares (module docstring)."""
    or_ = removed[2] >= PAIR_MIN and max(removed[:2]) < 0.5 * removed[2]
    and_ = recovered[2] >= PAIR_MIN and max(recovered[:2]) < 0.5 * recovered[2]
    if or_ and and_:
        return "joint"
    if or_ or and_:
        return "OR" if or_ else "AND"
    if max(removed[2], recovered[2]) < PAIR_MIN:
        return "none"
    for k in (0, 1):
        alone = [(removed[k], removed[1 - k], removed[2]), (recovered[k], recovered[1 - k], recovered[2])]
        if all(mine >= ONE * both and other < (1 - ONE) * both for mine, other, both in alone if both >= PAIR_MIN):
            return "one"
    return "additive"


def with_readings(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pair tests with each pair's reading (:func:`pair_reading`), read at analysis time from the stored
    shares, so that a change of reading needs no new measurement."""
    reading = [pair_reading((r.removed_a, r.removed_b, r.removed_both), (r.recovered_a, r.recovered_b,
                                                                          r.recovered_both))
               for r in pairs.itertuples()]
    return pairs.assign(reading=pd.Series(reading, index=pairs.index, dtype=object))


def pair_table(runner: PatchRunner, scoring: Scoring, top: int = PAIR_TOP) -> pd.DataFrame:
    """One checkpoint's pair tests: every head noised and denoised alone, then each pair of the ``top`` heads by the
    larger single share; one row per pair (module docstring)."""
    heads = [(la, he) for la in range(runner.sites.n_layers) for he in range(runner.sites.n_heads)]
    singles = [Patch((h,), d) for h in heads for d in ("noise", "denoise")]
    r2 = patch_scores(runner, scoring, [Patch((), "noise"), Patch((), "denoise"), *singles])
    clean, cf = r2[CLEAN], r2[CORRUPT]

    def shares(hs: tuple[Head, ...], got: dict[str, float]) -> tuple[float, float]:
        removed = (clean - got[Patch(hs, "noise").name]) / clean if clean > 0 else np.nan
        recovered = (got[Patch(hs, "denoise").name] - cf) / (clean - cf) if clean > cf else np.nan
        return removed, recovered

    single = {h: shares((h,), r2) for h in heads}
    ranked = sorted(heads, key=lambda h: (-np.nanmax([*single[h], -np.inf]), h))[:top]
    pairs = list(combinations(sorted(ranked), 2))
    joint = patch_scores(runner, scoring, [Patch(p, d) for p in pairs for d in ("noise", "denoise")])
    rows = []
    for a, b in pairs:
        rem_ab, rec_ab = shares((a, b), joint)
        removed = (single[a][0], single[b][0], rem_ab)
        recovered = (single[a][1], single[b][1], rec_ab)
        rows.append({"a": head_name(*a), "b": head_name(*b), "r2_clean": clean, "r2_counterfactual": cf,
                     "removed_a": removed[0], "removed_b": removed[1], "removed_both": rem_ab,
                     "recovered_a": recovered[0], "recovered_b": recovered[1], "recovered_both": rec_ab,
                     "interaction_noise": rem_ab - removed[0] - removed[1],
                     "interaction_denoise": rec_ab - recovered[0] - recovered[1]})
    return pd.DataFrame(rows, columns=["a", "b", "r2_clean", "r2_counterfactual", "removed_a", "removed_b",
                                       "removed_both", "recovered_a", "recovered_b", "recovered_both",
                                       "interaction_noise", "interaction_denoise"])


@dataclass(frozen=True)
class PairTests(Named):
    """The pair tests of one checkpoint against ``counterfactual`` (:func:`pair_table`), scored by ``scoring``: a
    condition the sweep measures and the results store keeps, as the table ``pair_tests``."""

    kind: ClassVar[str] = "pairs"
    counterfactual: Stimuli = field(compare=False, repr=False)
    scoring: Scoring = Scoring()
    top: int = PAIR_TOP

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "counterfactual": {"name": self.counterfactual.name,
                                                      "hash": self.counterfactual.hash},
                "scoring": asdict(self.scoring), "top": self.top, "min": PAIR_MIN}

    def label(self) -> str:
        return f"top{self.top}"

    def measurements(self, config: ExtractConfig) -> tuple[str, ...]:
        return PAIRS

    def measure(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stimuli: Stimuli,
                config: ExtractConfig, donor: Donor | None, progress: bool) -> dict[str, pd.DataFrame]:
        runner = PatchRunner(model, tokenizer, stimuli, self.counterfactual, config.batch_size, warn=False)
        return {"pair_tests": pair_table(runner, self.scoring, self.top)}

    def cost(self, n_layers: int, n_heads: int) -> float:
        return pair_cost(n_layers, n_heads, self.top)


def pair_cost(n_layers: int, n_heads: int, top: int = PAIR_TOP) -> float:
    """One checkpoint's pair tests in intact-pass equivalents: every head alone both ways, then each pair."""
    return PATCH_PREP + PATCH_RUN * (2 * n_layers * n_heads + 2 + top * (top - 1))


def partners_map(noise: pd.DataFrame, denoise: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Patching with partners (protocol 3's second new method) at each checkpoint the pairs were tested: the heads
    significant in either single-head map, plus both members of every pair read ``OR`` or ``joint``. Scored by the
    larger single-head share, raised to the pair's joint removed share for the members of such a pair."""
    cols = ["model", "seed", "step", "layer", "head"]
    if noise.empty or denoise.empty or pairs.empty:
        return pd.DataFrame(columns=[*cols, "significant", "score"])
    both = noise[cols + ["significant", "share"]].merge(denoise[cols + ["significant", "share"]], on=cols,
                                                        suffixes=("_noise", "_denoise"))
    both = both.merge(pairs[["model", "seed", "step"]].drop_duplicates(), on=["model", "seed", "step"])
    named: dict[tuple[str, int, int, int, int], float] = {}
    for r in pairs[pairs["reading"].isin(["OR", "joint"])].itertuples():
        for h in (r.a, r.b):
            key = (str(r.model), int(r.seed), int(r.step), *parse_head(h))
            named[key] = max(named.get(key, -np.inf), float(r.removed_both))
    keys = list(zip(both["model"].astype(str), both["seed"].astype(int), both["step"].astype(int),
                    both["layer"].astype(int), both["head"].astype(int)))
    partner = np.array([k in named for k in keys])
    single = both["significant_noise"].astype(bool) | both["significant_denoise"].astype(bool)
    share = both[["share_noise", "share_denoise"]].max(axis=1).to_numpy(float)
    score = np.maximum(share, [named.get(k, -np.inf) for k in keys])
    return both.assign(significant=single.to_numpy() | partner, score=score)[[*cols, "significant", "score"]]
