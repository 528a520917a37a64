"""Stage 4's ablation half: are the heads found by discovery causally necessary for disambiguation?

Per (model, seed) it designs the conditions (:func:`design`) and tests them with :mod:`lexprobe.analysis.nulls`:

* at the last checkpoint: the discovered heads ablated by each method (``zero``, ``mean``, ``resample``, and
  ``knockout`` of only their target->cue edges) against ``n_random`` random same-size sets of non-target heads
  (optionally layer-matched) treated the same way; positive controls: the no-op (drop exactly 0) and knocking out
  the target->cue edges in every head against ``n_random`` knockouts of as many random earlier non-cue edges;
* at every checkpoint: the discovered set's zero ablation against ``n_random_dev`` random sets (when does the
  effect appear, relative to the inflection?) and every single head's zero ablation (the causal head map);
* the original study's QK edit (``qk-zero``, and ``qk-copy`` from the earliest stored checkpoint after step 0, step
  1 when it is stored) of the discovered heads against random sets at every checkpoint, with the study's regression
  (effect ~ log10(step + 1) + target-vs-random) beside the per-checkpoint tests;
* exactness: with every target->cue edge cut, the target's embeddings of a noun's sentences must be identical
  whenever the sentences differ only in a cue of equal token length (pair distances at most ``EXACT``).

:mod:`lexprobe.stages.causal` composes it with the patching half (:mod:`lexprobe.stages.patching`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd

from lexprobe.analysis import nulls
from lexprobe.checkpoints.suites import load_tokenizer, log_subset
from lexprobe.engine.conditions import Condition
from lexprobe.engine.interventions import (
    KINDS,
    EdgeKnockout,
    HeadAblation,
    Intervention,
    NoOp,
    intervention_of,
    random_head_sets,
)
from lexprobe.engine.patches import PatchMap
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.stimuli.align import encode

METHODS = tuple(kind for kind in KINDS if kind != "none")  # every intervention kind but the intact model
LEAN = ("qk-zero", "qk-copy")  # the default: the original study's own test (the rest answered by patching)
DEVELOPMENT = ("zero", "qk-zero", "qk-copy")  # methods measured at every checkpoint (the rest at the last)
EXACT = 1e-5


@dataclass(frozen=True)
class Design:
    """Stage 4's conditions: one row per (model, seed, condition) in ``table`` (family, role, draw, scope, heads,
    n_heads, source_step) and the condition values by name in ``conditions`` (a table holds names, not objects)."""

    table: pd.DataFrame
    conditions: dict[str, Condition]

    def at(self, rows: pd.DataFrame) -> list[Condition]:
        """The conditions of some of the table's rows."""
        return [self.conditions[c] for c in rows["condition"]]


@dataclass
class Ablation:
    """Stage 4's ablation tables: the design, best-layer scores per condition, drops, null tests, when the zero
    ablation's effect appears, the causal head map and its agreement with discovery, the no-op control, exactness
    and the original study's regression."""

    design: pd.DataFrame
    best: pd.DataFrame
    drops: pd.DataFrame
    tests: pd.DataFrame
    onset_of_effect: pd.DataFrame
    causal_map: pd.DataFrame
    agreement: pd.DataFrame
    controls: pd.DataFrame
    exactness: pd.DataFrame
    regression: pd.DataFrame
    refused: pd.DataFrame  # methods this architecture cannot apply exactly (columns method, reason): not measured


def design(stats: pd.DataFrame, *, n_layers: int, n_heads: int, n_random: int, n_random_dev: int,
           methods: tuple[str, ...] = METHODS, layer_matched: bool = False, seed: int = 0,
           source_step: int | None = None, patch_map: PatchMap | None = None, head_map: bool = True) -> Design:
    """One row per (model, seed, condition): its family and role, and where it is measured (``scope`` last | all |
    map | patch), and the conditions by name: the no-op control; with ``knockout`` among the ``methods`` its edge
    controls (every target->cue edge, and random earlier edges); with ``head_map`` every single head's zero
    ablation; each method on the discovered heads and on random sets. ``qk-copy`` copies from ``source_step`` (left
    out when None); a ``patch_map`` is measured once per (model, seed) (family ``patch``, scope ``patch``)."""
    rows = []
    conditions: dict[str, Condition] = {}

    def add(model: str, sd: int, iv: Intervention | PatchMap, family: str, role: str, draw: int, scope: str) -> None:
        heads = () if isinstance(iv, NoOp) else None if isinstance(iv, PatchMap) else iv.head_set()
        conditions[iv.condition] = iv
        rows.append({"model": model, "seed": sd, "condition": iv.condition, "family": family,
                     "role": role, "draw": draw, "scope": scope, "heads": heads,
                     "n_heads": n_layers * n_heads if heads is None else len(heads), "source_step": iv.donor_step})

    methods = tuple(m for m in methods if m != "qk-copy" or source_step is not None)
    for (model, sd), st in stats.groupby(["model", "seed"]):
        target = tuple(sorted((int(r.layer), int(r.head)) for r in st.itertuples() if r.passes))
        add(model, sd, NoOp(), "noop", "control", 0, "last")
        if "knockout" in methods:
            add(model, sd, EdgeKnockout(None), "edges", "target", 0, "last")
            for k in range(n_random):
                add(model, sd, EdgeKnockout(None, edges="random", seed=k), "edges", "random", k, "last")
        for layer in range(n_layers if head_map else 0):
            for head in range(n_heads):
                add(model, sd, HeadAblation(((layer, head),)), "single", "single", 0, "map")
        if patch_map is not None:
            add(model, sd, patch_map, "patch", "map", 0, "patch")
        if not target:
            continue
        sets = random_head_sets(n_layers, n_heads, target, len(target), max(n_random, n_random_dev),
                                seed=seed + int(sd), layer_matched=layer_matched)
        for method in methods:
            dev = method in DEVELOPMENT
            iv = intervention_of(method, target, seed, source_step)
            assert iv is not None  # a method on a non-empty head set ("none" is no method)
            add(model, sd, iv, method, "target", 0, "all" if dev else "last")
            n_sets = max(n_random, n_random_dev) if dev else n_random
            for k, heads in enumerate(sets[:n_sets]):
                iv = intervention_of(method, heads, seed + k, source_step)
                assert iv is not None  # as above: random sets are as large as the target
                add(model, sd, iv, method, "random", k, "all" if dev and k < n_random_dev else "last")
    return Design(pd.DataFrame(rows), conditions)


def exactness(stage1: Inflection, pairs: pd.DataFrame, condition: str) -> pd.DataFrame:
    """Per (model, seed): the largest pair distance (any layer) under the all-edge knockout, over nouns whose
    sentences differ only in cues of equal token length; and the nouns left out."""
    suite, stim = stage1.suite, stage1.stimuli
    rows = []
    for (model, sd), g in pairs[pairs["condition"] == condition].groupby(["model", "seed"]):
        step = int(g["step"].max())
        tok = load_tokenizer(suite.checkpoint(model, sd, step))
        enc = encode(tok, stim.sentences)
        sents = stim.sentences.assign(
            frame=[tuple(int(t) for t, c in zip(ids[: int(n)], cm[: int(n)]) if not c)
                   for ids, cm, n in zip(enc.input_ids, enc.cue_mask, enc.lengths)],
            n_cue=enc.cue_mask.sum(1).numpy())
        same = sents.groupby("word").apply(lambda w: w["frame"].nunique() == 1 and w["n_cue"].nunique() == 1,
                                           include_groups=False)
        ok = set(same[same].index)
        at = g[(g["step"] == step) & g["word"].isin(ok)]
        rows.append({"model": model, "seed": sd, "step": step, "nouns_checked": len(ok),
                     "nouns_left_out": len(same) - len(ok), "left_out": " ".join(sorted(set(same.index) - ok)),
                     "max_distance": float(at["distance"].abs().max()),
                     "exact": bool(at["distance"].abs().max() <= EXACT)})
    return pd.DataFrame(rows)


def no_heads_discovered(models: tuple[str, ...], seeds: tuple[int, ...], n_layers: int,
                        n_heads: int) -> pd.DataFrame:
    """Stage 2's statistics as :func:`design` reads them when stage 2 did not run: every head, none passing (the
    design then holds the controls, the single-head map and the patch map, and no discovered set)."""
    return pd.DataFrame([{"model": m, "seed": sd, "layer": layer, "head": head, "passes": False}
                         for m in models for sd in seeds for layer in range(n_layers) for head in range(n_heads)])


def measured_conditions(plan: Design, steps: tuple[int, ...],
                        map_steps: int = 0) -> Iterator[tuple[str, int, tuple[int, ...], pd.DataFrame]]:
    """Per (model, seed) and scope: the checkpoints and the design rows measured there (``last``: the last
    checkpoint; ``all``: every one; ``map`` and ``patch``: about ``map_steps`` log-spaced ones, 0: every one)."""
    map_at = log_subset(steps, map_steps) if map_steps else steps
    for (model, sd), g in plan.table.groupby(["model", "seed"]):
        for scope, chosen in (("last", steps[-1:]), ("all", steps), ("map", map_at), ("patch", map_at)):
            yield str(model), int(sd), chosen, g[g["scope"] == scope]


def ablation_results(stage1: Inflection, stage2: Discovery | None, design: pd.DataFrame, pairs: pd.DataFrame,
                     n_boot: int, seed: int, refused: dict[str, str] | None = None) -> Ablation:
    """Stage 4's ablation tables from the pair distances of every condition (``design``: :func:`design`'s table, one
    row per (model, seed, condition)): best layers, drops, null tests, when the zero ablation's effect appears, the
    causal head map and its agreement with discovery (none without stage 2), the no-op control, exactness and the
    original study's regression; ``refused``: the methods the architecture cannot apply exactly, with why."""
    scoring = stage1.scoring
    best = scoring.best(pairs)
    dr = nulls.drops(best)
    tests = nulls.null_tests(dr, design)
    singles = design.loc[design["role"] == "single", "condition"]
    map_pairs = scoring.layers(pairs[pairs["condition"].isin(["intact", *singles])])
    cmap = nulls.causal_map(map_pairs, design, target=scoring.target, n_boot=n_boot, seed=seed, by=scoring.by)
    agree = (nulls.agreement(cmap, stage2.stats, step=stage1.steps[-1]) if len(cmap) and stage2 is not None
             else pd.DataFrame())
    noop = design[design["family"] == "noop"][[*nulls.DESIGN_KEYS, "family"]]
    return Ablation(design, best, dr, tests, nulls.first_significant(tests[tests["family"] == "zero"]), cmap,
                    agree, dr.merge(noop, on=nulls.DESIGN_KEYS),
                    exactness(stage1, pairs, EdgeKnockout(None).condition),
                    nulls.study_regression(dr, design, DEVELOPMENT, seed=seed),
                    pd.DataFrame(list((refused or {}).items()), columns=["method", "reason"]))




