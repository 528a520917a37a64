"""Stage 4's activation patching: the counterfactual set, the patch map's design, and redundancy (greedy sets).

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

from functools import partial

import numpy as np
import pandas as pd

from lexprobe.analysis.nulls import vs_null
from lexprobe.analysis.patchmaps import CLEAN, CORRUPT, reading
from lexprobe.analysis.performance import with_pairs
from lexprobe.checkpoints.suites import Checkpoint, load_checkpoint, load_tokenizer, log_subset
from lexprobe.engine.device import resolve_device, torch_dtype
from lexprobe.engine.extract import ExtractConfig
from lexprobe.engine.interventions import Head, random_head_sets
from lexprobe.engine.patches import DIRECTIONS, Patch, PatchRunner, layer_heads
from lexprobe.stages.inflection import Inflection
from lexprobe.stimuli.perturb import neutral
from lexprobe.stimuli.tables import Stimuli
from lexprobe.sweep.pool import parallel_map
from lexprobe.sweep.run import release

RECOVER = 0.8  # the share of the clean R^2 a greedy set must recover


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


def _scores(runner: PatchRunner, stage1: Inflection, patches: list[Patch]) -> dict[str, float]:
    """Best-layer R^2 of each patch on every pair (the study's rule; constant distances score 0)."""
    dist = stage1.scoring.layers(runner.distances(patches).rename(columns={"patch": "condition"}))
    best = stage1.best_of(with_pairs(dist, stage1.stimuli))
    r2 = best.set_index("condition")["r2"]
    return {p.name: float(r2.get(p.name, np.nan)) if np.isfinite(r2.get(p.name, np.nan)) else 0.0
            for p in patches}


def greedy_set(runner: PatchRunner, stage1: Inflection, heads: list[Head]
               ) -> tuple[list[dict], tuple[Head, ...], float, float]:
    """The greedy recovery curve (rows: size, added head, recovered share, R^2) until RECOVER is reached or every
    head is in the set, the set, and the clean and counterfactual R^2 (no set when the clean run does not beat
    the counterfactual: there is nothing to recover)."""
    base = _scores(runner, stage1, [Patch((), "noise"), Patch((), "denoise")])
    clean, cf = base[CLEAN], base[CORRUPT]
    room = clean - cf
    chosen: list[Head] = []
    curve: list[dict] = []
    while room > 0 and len(chosen) < len(heads):
        cands = [h for h in heads if h not in chosen]
        got = _scores(runner, stage1, [Patch(tuple(chosen + [h]), "denoise") for h in cands])
        r2 = [got[Patch(tuple(chosen + [h]), "denoise").name] for h in cands]
        best = int(np.argmax(r2))
        chosen.append(cands[best])
        recovered = (r2[best] - cf) / room if room > 0 else np.nan
        curve.append({"size": len(chosen), "added": f"L{cands[best][0]}H{cands[best][1]}", "recovered": recovered,
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


def set_tests(runner: PatchRunner, stage1: Inflection, chosen: tuple[Head, ...], clean: float, cf: float,
              n_random: int, seed: int) -> dict:
    """A greedy set against ``n_random`` random same-size sets drawn from every head (the set itself excluded):
    joint recovery and removal with their p (:func:`lexprobe.analysis.nulls.vs_null`), its members' single
    effects, and the reading."""
    n_layers, n_heads = runner.sites.n_layers, runner.sites.n_heads
    sets = [s for s in random_head_sets(n_layers, n_heads, (), len(chosen), n_random + 1, seed=seed)
            if s != chosen][:n_random]
    patches = {p.name: p for s in [chosen, *sets, *((h,) for h in chosen)] for p in
               (Patch(s, "noise"), Patch(s, "denoise"))}
    r2 = _scores(runner, stage1, list(patches.values()))
    joint = _shares(r2, clean, cf, chosen)
    null = np.array([_shares(r2, clean, cf, s) for s in sets]).reshape(-1, 2)
    single = {h: _shares(r2, clean, cf, (h,)) for h in chosen}
    return {"set": " ".join(f"L{l}H{h}" for l, h in chosen), "size": len(chosen), "r2_clean": clean,
            "r2_counterfactual": cf, "recovered": joint[0], "reached": bool(joint[0] >= RECOVER),
            "drop_share": joint[1],
            **{f"recovered_{k}": v for k, v in vs_null(null[:, 0], joint[0]).items()},
            **{f"drop_{k}": v for k, v in vs_null(null[:, 1], joint[1]).items()},
            "single_recovered": " ".join(f"{v[0]:.2f}" for v in single.values()),
            "single_drop": " ".join(f"{v[1]:.2f}" for v in single.values()),
            "reading": reading({h: v[0] for h, v in single.items()}, {h: v[1] for h, v in single.items()},
                               joint[0], joint[1])}


def search_at(ck: Checkpoint, stage1: Inflection, counterfactual: Stimuli, n_random: int, seed: int,
              cfg: ExtractConfig) -> tuple[list[dict], dict]:
    """One checkpoint's greedy recovery curve rows and its :func:`set_tests` row (one load, the runner shared by
    the search and the tests); a pool task of :func:`redundancy`."""
    loaded = load_checkpoint(ck, torch_dtype(cfg.dtype), resolve_device(cfg.device))
    try:
        runner = PatchRunner(loaded.model, loaded.tokenizer, stage1.stimuli, counterfactual, cfg.batch_size)
        heads = [(l, h) for l in range(runner.sites.n_layers) for h in range(runner.sites.n_heads)]
        curve, chosen, clean, cf = greedy_set(runner, stage1, heads)
        where = {"model": ck.model, "seed": ck.seed, "step": ck.step}
        test = set_tests(runner, stage1, chosen, clean, cf, n_random, seed + ck.seed) if chosen else {
            "set": "", "size": 0, "r2_clean": clean, "r2_counterfactual": cf, "reached": False,
            "reading": "nothing to recover"}
        return [{**where, **row} for row in curve], {**where, **test}
    finally:
        release(loaded)


def redundancy(stage1: Inflection, counterfactual: Stimuli, n_random: int, n_steps: int, *, seed: int,
               config: ExtractConfig, progress: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (model, seed) at about ``n_steps`` log-spaced checkpoints (the last included): the greedy recovery
    curve, and one row of :func:`set_tests`; the checkpoints are searched on the worker pool
    (:func:`lexprobe.sweep.pool.parallel_map`), each search deterministic, so the tables do not depend on the pool."""
    cks = stage1.suite.checkpoints(log_subset(stage1.steps, n_steps))
    task = partial(search_at, stage1=stage1.scorer(), counterfactual=counterfactual, n_random=n_random, seed=seed,
                   cfg=config)
    done = parallel_map(task, cks, desc="stage 4: greedy sufficient sets", progress=progress)
    return (pd.DataFrame([row for curve, _ in done for row in curve]),
            pd.DataFrame([test for _, test in done]))
