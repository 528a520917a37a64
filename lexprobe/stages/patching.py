"""Stage 4's patching half: the counterfactual set, the patch map's design, the maps' statistics, redundancy (greedy
sets) and this half's view; :mod:`lexprobe.stages.causal` composes it with the ablation half.

The patch map (:class:`lexprobe.engine.patches.PatchMap`) of a checkpoint holds, in both directions, no patch (the clean
and counterfactual runs), every head of every layer (the exactness controls), every layer's heads together, and
every single head. Redundancy asks, per seed at the last checkpoint and a few log-spaced ones, for the greedy
smallest set of heads whose joint denoising recovers at least ``RECOVER`` of the clean R^2 (above the
counterfactual baseline): from the empty set, add the head whose addition recovers most, until the threshold is
reached (the recovery curve). That set's necessity (its joint noising) and sufficiency are then set against
``n_random`` random same-size head sets, and its members' single-head effects say whether it is an OR of
sufficient heads or an AND of necessary ones (:func:`lexprobe.analysis.patchmaps.reading`).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from lexprobe.analysis import nulls, patchmaps
from lexprobe.analysis.nulls import vs_null
from lexprobe.analysis.patchmaps import CLEAN, CORRUPT, reading
from lexprobe.analysis.performance import Scoring, with_pairs
from lexprobe.base.heads import Head, head_name, heads_name
from lexprobe.checkpoints.suites import load_tokenizer, log_subset
from lexprobe.engine.conditions import Donor, Named
from lexprobe.engine.extract import ExtractConfig
from lexprobe.engine.interventions import random_head_sets
from lexprobe.engine.patches import (
    DIRECTIONS,
    PATCH_PREP,
    PATCH_RUN,
    Patch,
    PatchRunner,
    PatchWarning,
    layer_heads,
)
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.stimuli.perturb import neutral
from lexprobe.stimuli.tables import Stimuli
from lexprobe.store.results import ResultsStore
from lexprobe.sweep.run import extract

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

RECOVER = 0.8  # the share of the clean R^2 a greedy set must recover
TIE = 1e-6  # greedy candidates whose R^2 is within this of the best are tied (float32 rounding moves R^2 ~1e-7)


@dataclass
class Patching:
    """Stage 4's patching tables: the counterfactual set, the patches of a map, the necessity and sufficiency maps,
    their exactness controls (with what was patched at each checkpoint: ``n_sentences``, ``n_pairs``), each head's
    first significant checkpoint, agreement with discovery, and the greedy sufficient sets (recovery curves and their
    tests)."""

    counterfactual: Stimuli
    patches: pd.DataFrame
    patch_maps: pd.DataFrame
    patch_exactness: pd.DataFrame
    patch_first: pd.DataFrame
    patch_agreement: pd.DataFrame
    greedy_curve: pd.DataFrame
    greedy_tests: pd.DataFrame


def counterfactual_of(stage1: Inflection) -> Stimuli:
    """The default counterfactual set: every cue replaced by a sense-neutral modifier in its place
    (:func:`lexprobe.stimuli.perturb.neutral`), checked against the suite's tokenizer."""
    return neutral(stage1.stimuli, tokenizer=load_tokenizer(stage1.tokenizer_at(stage1.steps[-1])))


def patch_design(n_layers: int, n_heads: int) -> tuple[Patch, ...]:
    """The patches of a map: per direction no head, every head, each layer's heads, each single head."""
    out: dict[str, Patch] = {}
    for d in DIRECTIONS:
        for p in (Patch((), d), Patch(None, d), *(Patch(layer_heads(l, n_heads), d) for l in range(n_layers)),
                  *(Patch(((l, h),), d) for l in range(n_layers) for h in range(n_heads))):
            out.setdefault(p.name, p)  # a one-head layer's layer patch is its single-head patch
    return tuple(out.values())


def patch_table(patches: tuple[Patch, ...], n_heads: int) -> pd.DataFrame:
    """One row per patch: name, direction, unit (none | all | layer | head), layer and head (-1 where none)."""
    rows = []
    for p in patches:
        heads = p.heads
        if heads is None or not heads:
            unit, layer, head = ("all" if heads is None else "none"), -1, -1
        elif len(heads) == 1:
            unit, layer, head = "head", heads[0][0], heads[0][1]
        else:
            unit, layer, head = "layer", heads[0][0], -1
            assert heads == layer_heads(layer, n_heads), f"{p.name} is neither a head nor a whole layer"
        rows.append({"name": p.name, "direction": p.direction, "unit": unit, "layer": layer, "head": head})
    return pd.DataFrame(rows)




def _sentences(pairs: pd.DataFrame) -> int:
    """How many sentences the pairs (columns s1, s2) are made of."""
    return len(np.union1d(pairs["s1"], pairs["s2"]))


def patched_counts(distances: pd.DataFrame, stimuli: Stimuli) -> pd.DataFrame:
    """Per (model, seed, step) of stored patch-map distances: ``n_pairs``, the pairs scored, and ``n_sentences``,
    the sentences patched in them (a sentence whose counterfactual cannot be patched is dropped with its pairs:
    :class:`lexprobe.engine.patches.PatchRunner`)."""
    ends = stimuli.pairs.set_index("pair_id")[["s1", "s2"]]
    rows = []
    for (model, sd, step), g in distances.groupby(["model", "seed", "step"]):
        ids = g["pair_id"].unique()
        rows.append({"model": model, "seed": sd, "step": step, "n_sentences": _sentences(ends.loc[ids]),
                     "n_pairs": len(ids)})
    return pd.DataFrame(rows)


def _warn_dropped(exact: pd.DataFrame, stimuli: Stimuli) -> None:
    """One warning when a checkpoint's patch map scored fewer pairs than the stimuli have."""
    short = exact[exact["n_pairs"] < len(stimuli.pairs)]
    if len(short):
        warnings.warn(f"stage 4 patching on {stimuli.name!r}: {len(short)} of {len(exact)} map checkpoints scored "
                      f"fewer pairs than the stimuli have (fewest: {short['n_sentences'].min()} of "
                      f"{_sentences(stimuli.pairs)} sentences patched, {short['n_pairs'].min()} of "
                      f"{len(stimuli.pairs)} pairs scored; each checkpoint's counts are patch_exactness's n_sentences "
                      "and n_pairs): the other sentences' counterfactuals cannot be patched at the noun (none, a noun "
                      "tokenized differently there, or, where positions are learned as in GPT-2, a prefix longer than "
                      "the real sentence's)", PatchWarning, stacklevel=3)


def patching_results(stage1: Inflection, stage2: Discovery | None, store: ResultsStore, conditions: list[str],
                     pairs: pd.DataFrame, ptab: pd.DataFrame, n_boot: int, seed: int
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The patch maps (the stored patch-map ``conditions``), their exactness controls with what was patched
    (:func:`patched_counts`; one warning when sentences were dropped), each head's first significant checkpoint and
    the agreement of the last checkpoint's necessary and sufficient heads with discovery (none without stage 2). The
    maps are read and
    scored one (model, seed) at a time, in order, with one generator for the bootstrap draws: the tables are those
    of one pass over every seed, without every seed's patched distances in memory at once."""
    scoring, stim = stage1.scoring, stage1.stimuli
    rng = np.random.default_rng(seed)
    maps, exact = [], []
    for model, sd in sorted({(m, int(s)) for m, s in stage1.best[["model", "seed"]].itertuples(index=False)}):
        try:
            patched = store.load("distances", suite=stage1.suite.name, stimuli=stim.name, condition=conditions,
                                 step=list(stage1.steps), model=model, seed=sd)
        except FileNotFoundError:  # this seed's maps were not measured (a skipped checkpoint)
            continue
        ppairs = with_pairs(patched.assign(condition=patched["patch"]).drop(columns="patch"), stim)
        counts = patched_counts(patched, stim)
        del patched
        mine = pairs[(pairs["model"] == model) & (pairs["seed"] == sd)]
        intact = mine[(mine["condition"] == "intact") & mine["step"].isin(ppairs["step"].unique())
                      & mine["pair_id"].isin(ppairs["pair_id"].unique())]
        ppairs, intact = scoring.layers(ppairs), scoring.layers(intact)
        part = patchmaps.patch_maps(ppairs, ptab, target=scoring.target, n_boot=n_boot, by=scoring.by, rng=rng)
        if part.empty:
            continue
        maps.append(part)
        exact.append(patchmaps.patch_exactness(ppairs, intact, scoring.best(pd.concat([ppairs, intact])))
                     .merge(counts, on=["model", "seed", "step"], how="left", validate="one_to_one"))
    if not maps:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    out, checks = pd.concat(maps, ignore_index=True), pd.concat(exact, ignore_index=True)
    _warn_dropped(checks, stim)
    agree = pd.DataFrame() if stage2 is None else pd.concat(
        [nulls.agreement(out[(out["unit"] == "head") & (out["direction"] == d)], stage2.stats).assign(direction=d)
         for d in ("noise", "denoise")], ignore_index=True)
    return out, checks, patchmaps.first_patched(out), agree


def patch_scores(runner: PatchRunner, scoring: Scoring, patches: list[Patch]) -> dict[str, float]:
    """Best-layer R^2 of each patch on every pair (the study's rule; constant distances score 0)."""
    dist = scoring.layers(runner.distances(patches).rename(columns={"patch": "condition"}))
    best = scoring.best(with_pairs(dist, runner.stimuli))
    r2 = best.set_index("condition")["r2"]
    return {p.name: float(r2.get(p.name, np.nan)) if np.isfinite(r2.get(p.name, np.nan)) else 0.0
            for p in patches}


def greedy_set(runner: PatchRunner, scoring: Scoring, heads: list[Head]
               ) -> tuple[list[dict], tuple[Head, ...], float, float]:
    """The greedy recovery curve (rows: size, added head, recovered share, R^2) until RECOVER is reached or every
    head is in the set, the set, and the clean and counterfactual R^2 (no set when the clean run does not beat
    the counterfactual: there is nothing to recover).

    Each round adds the head whose joint denoising scores best; heads within :data:`TIE` of the best are tied and
    the one in the lowest layer (then lowest head) wins. Without the tolerance, ties are common (a head above the
    best layer cannot move it: it scores exactly what the set without it scores) and float32 rounding alone (a
    batch size, a device) decides between a tied head and one below the best layer that scores 1e-16 higher, and
    with it the rest of the set."""
    base = patch_scores(runner, scoring, [Patch((), "noise"), Patch((), "denoise")])
    clean, cf = base[CLEAN], base[CORRUPT]
    room = clean - cf
    chosen: list[Head] = []
    curve: list[dict] = []
    while room > 0 and len(chosen) < len(heads):
        cands = sorted(h for h in heads if h not in chosen)
        got = patch_scores(runner, scoring, [Patch(tuple(chosen + [h]), "denoise") for h in cands])
        r2 = [got[Patch(tuple(chosen + [h]), "denoise").name] for h in cands]
        best = next(i for i, v in enumerate(r2) if v >= max(r2) - TIE)
        chosen.append(cands[best])
        recovered = (r2[best] - cf) / room if room > 0 else np.nan
        curve.append({"size": len(chosen), "added": head_name(*cands[best]), "recovered": recovered,
                      "r2": r2[best]})
        if recovered >= RECOVER:
            break
    return curve, tuple(sorted(chosen)), clean, cf


def _shares(r2: dict[str, float], clean: float, cf: float, heads: tuple[Head, ...]) -> tuple[float, float]:
    """(recovered share under joint denoising, removed share under joint noising) of a head set."""
    room = clean - cf
    recovered = (r2[Patch(heads, "denoise").name] - cf) / room if room > 0 else np.nan
    removed = (clean - r2[Patch(heads, "noise").name]) / clean if clean > 0 else np.nan
    return recovered, removed


def set_tests(runner: PatchRunner, scoring: Scoring, chosen: tuple[Head, ...], clean: float, cf: float,
              n_random: int, seed: int) -> dict:
    """A greedy set against ``n_random`` random same-size sets drawn from every head (the set itself excluded):
    joint recovery and removal with their p (:func:`lexprobe.analysis.nulls.vs_null`), its members' single
    effects, and the reading."""
    n_layers, n_heads = runner.sites.n_layers, runner.sites.n_heads
    sets = [s for s in random_head_sets(n_layers, n_heads, (), len(chosen), n_random + 1, seed=seed)
            if s != chosen][:n_random]
    patches = {p.name: p for s in [chosen, *sets, *((h,) for h in chosen)] for p in
               (Patch(s, "noise"), Patch(s, "denoise"))}
    r2 = patch_scores(runner, scoring, list(patches.values()))
    joint = _shares(r2, clean, cf, chosen)
    null = np.array([_shares(r2, clean, cf, s) for s in sets]).reshape(-1, 2)
    single = {h: _shares(r2, clean, cf, (h,)) for h in chosen}
    return {"set": heads_name(chosen), "size": len(chosen), "r2_clean": clean,
            "r2_counterfactual": cf, "recovered": joint[0], "reached": bool(joint[0] >= RECOVER),
            "drop_share": joint[1],
            **{f"recovered_{k}": v for k, v in vs_null(null[:, 0], joint[0]).items()},
            **{f"drop_{k}": v for k, v in vs_null(null[:, 1], joint[1]).items()},
            "single_recovered": " ".join(f"{v[0]:.2f}" for v in single.values()),
            "single_drop": " ".join(f"{v[1]:.2f}" for v in single.values()),
            "reading": reading({h: v[0] for h, v in single.items()}, {h: v[1] for h, v in single.items()},
                               joint[0], joint[1])}


GREEDY = ("greedy_curve", "greedy_tests")  # the store's tables of a greedy search
CURVE = ("size", "added", "recovered", "r2")
GREEDY_ROUNDS = 4  # rounds over every head a greedy search is costed at (it stops once RECOVER is reached)


@dataclass(frozen=True)
class GreedySearch(Named):
    """The greedy sufficient set of one checkpoint against ``counterfactual`` (:func:`greedy_set`) with its
    random-set tests (:func:`set_tests`, seeded by ``seed``), scored by ``scoring``: a condition the sweep measures
    and the results store keeps, as the tables ``greedy_curve`` and ``greedy_tests``."""

    kind: ClassVar[str] = "greedy"
    counterfactual: Stimuli = field(compare=False, repr=False)
    scoring: Scoring = Scoring()
    n_random: int = 0
    seed: int = 0

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "counterfactual": {"name": self.counterfactual.name,
                                                      "hash": self.counterfactual.hash},
                "scoring": asdict(self.scoring), "n_random": self.n_random, "seed": self.seed, "recover": RECOVER,
                "tie": TIE}

    def label(self) -> str:
        return f"r{self.n_random}s{self.seed}"

    def measurements(self, config: ExtractConfig) -> tuple[str, ...]:
        return GREEDY

    def measure(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stimuli: Stimuli,
                config: ExtractConfig, donor: Donor | None, progress: bool) -> dict[str, pd.DataFrame]:
        """One checkpoint's greedy recovery curve and its test row (one runner for the search and the tests)."""
        runner = PatchRunner(model, tokenizer, stimuli, self.counterfactual, config.batch_size, warn=False)
        heads = [(l, h) for l in range(runner.sites.n_layers) for h in range(runner.sites.n_heads)]
        curve, chosen, clean, cf = greedy_set(runner, self.scoring, heads)
        test = set_tests(runner, self.scoring, chosen, clean, cf, self.n_random, self.seed) if chosen else {
            "set": "", "size": 0, "r2_clean": clean, "r2_counterfactual": cf, "reached": False,
            "reading": "nothing to recover"}
        return {"greedy_curve": pd.DataFrame(curve, columns=list(CURVE)), "greedy_tests": pd.DataFrame([test])}

    def cost(self, n_layers: int, n_heads: int) -> float:
        return PATCH_PREP + PATCH_RUN * (GREEDY_ROUNDS * n_layers * n_heads + 2 * self.n_random + 4 * GREEDY_ROUNDS)


def greedy_searches(stage1: Inflection, counterfactual: Stimuli, n_random: int,
                    seed: int) -> dict[tuple[str, int], GreedySearch]:
    """The greedy search of each (model, seed) of the suite (its random sets seeded by ``seed`` + the seed)."""
    return {(m, int(sd)): GreedySearch(counterfactual, stage1.scoring, n_random, seed + int(sd))
            for m in stage1.suite.models for sd in stage1.suite.seeds}


def greedy_checkpoints(steps: tuple[int, ...], onset: float | None, n_steps: int) -> tuple[int, ...]:
    """The checkpoints a greedy search runs at: about ``n_steps`` log-spaced ones from the ``onset`` on, the last
    included; the last alone where no onset was found (NaN). Before the onset the clean run beats the counterfactual
    by noise, so there is nothing to recover. ``onset`` None (not known yet, as when a study is planned): from the
    first checkpoint, the most a search can cost."""
    if onset is None:
        onset = steps[0]
    after = [s for s in steps if s >= onset] if np.isfinite(onset) else []
    return log_subset(after, n_steps) if after else steps[-1:]


def greedy_steps(stage1: Inflection, n_steps: int) -> dict[tuple[str, int], tuple[int, ...]]:
    """Per (model, seed): :func:`greedy_checkpoints` from the seed's estimated onset (stage 1's ``onset_step``)."""
    onsets = stage1.inflection.set_index(["model", "seed"])["onset_step"]
    return {(model, int(sd)): greedy_checkpoints(stage1.steps, float(onsets.get((model, int(sd)), np.nan)), n_steps)
            for model in stage1.suite.models for sd in stage1.suite.seeds}


def redundancy(stage1: Inflection, searches: dict[tuple[str, int], GreedySearch],
               steps: dict[tuple[str, int], tuple[int, ...]], *, store: ResultsStore, config: ExtractConfig,
               progress: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (model, seed) at its ``steps``: the greedy recovery curve and one row of :func:`set_tests`, measured
    through the sweep into ``store`` like every condition (each search deterministic, so the tables do not depend
    on the workers) and read back."""
    suite, stim = stage1.suite, stage1.stimuli
    for (model, sd), search in searches.items():
        extract(suite, stim, steps[model, sd], models=(model,), seeds=(sd,), root=store.root, config=config,
                conditions=[search], progress=progress)
    tables = [[store.load(m, suite=suite.name, stimuli=stim.name, condition=search.condition, model=model, seed=sd,
                          step=list(steps[model, sd])) for (model, sd), search in searches.items()] for m in GREEDY]
    curve, tests = (pd.concat(t, ignore_index=True).drop(columns=["suite", "stimuli", "condition"])
                    .sort_values(["model", "seed", "step"], kind="stable", ignore_index=True) for t in tables)
    return curve, tests








