"""Stage 3 runner and report: measure perturbed stimulus sets across development and test the discovered heads'
robustness.

Each perturbed set (:func:`lexprobe.stimuli.perturb.standard_set` by default) is extracted through the results store
under
its own stimuli name (cached like any extraction); :mod:`lexprobe.analysis.robustness` does the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from lexprobe.analysis.performance import with_pairs
from lexprobe.analysis.primitives import at_last_checkpoint
from lexprobe.analysis.robustness import head_robustness, retained_performance
from lexprobe.checkpoints.suites import load_tokenizer, log_subset
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.stimuli.perturb import cue_token_distance, load_phrases, standard_set
from lexprobe.stimuli.tables import Stimuli
from lexprobe.sweep.run import extract


@dataclass
class Perturbation:
    """Perturbation robustness: the sets, performance per set, per-head attention tests, discovered-head summary."""

    sets: dict[str, Stimuli]
    distance: pd.DataFrame  # per set: cue-target distance in tokens (median, min, max) and words
    best: pd.DataFrame
    retained: pd.DataFrame
    heads: pd.DataFrame
    summary: pd.DataFrame


def perturbation_steps(stage1: Inflection, n_steps: int = 0) -> tuple[int, ...]:
    """The checkpoints stage 3 measures: about ``n_steps`` log-spaced ones of stage 1's (0: all of them)."""
    return log_subset(stage1.steps, n_steps) if n_steps else stage1.steps


def perturbed_sets(stage1: Inflection, n_steps: int = 0) -> dict[str, Stimuli]:
    """The standard perturbed sets of stage 1's stimuli (:func:`lexprobe.stimuli.perturb.standard_set`), checked against
    the tokenizer of :func:`perturbation_steps`' last checkpoint."""
    last = perturbation_steps(stage1, n_steps)[-1]
    return standard_set(stage1.stimuli, tokenizer=load_tokenizer(stage1.tokenizer_at(last)))


MIN_PAIRS, MIN_SHARE = 10, 0.1  # a perturbed set with fewer pairs (or share of the intact set's) is not scored


def measurable(sets: dict[str, Stimuli], stimuli: Stimuli) -> dict[str, Stimuli]:
    """The perturbed sets with enough pairs to score: at least MIN_PAIRS and MIN_SHARE of the intact set's pairs
    (e.g. on RAW-C, ``frame`` keeps 3 of 504 pairs: its R^2 would be a number about 3 pairs)."""
    least = max(MIN_PAIRS, MIN_SHARE * len(stimuli.pairs))
    return {k: ps for k, ps in sets.items() if len(ps.pairs) >= least}


def perturbation_stage(stage1: Inflection, stage2: Discovery, sets: dict[str, Stimuli] | None = None,
                       n_steps: int = 0, progress: bool = True) -> Perturbation:
    """Extract every perturbed set (default: :func:`perturbed_sets`) at :func:`perturbation_steps` into stage 1's
    results store and compare it with the intact set, best layers chosen by stage 1's rule."""
    suite, stim = stage1.suite, stage1.stimuli
    steps = perturbation_steps(stage1, n_steps)
    tok = load_tokenizer(stage1.tokenizer_at(steps[-1]))
    sets = sets if sets is not None else standard_set(stim, tokenizer=tok)
    store, root = stage1.store, stage1.root
    cfg = replace(stage1.config, save_embeddings=False)
    models, seeds = list(stage1.best["model"].unique()), [int(s) for s in stage1.best["seed"].unique()]
    bests, heads, dist = [stage1.best.assign(perturbation="intact")], [], []
    seen = set(load_phrases().query("in_organism_corpus")["phrase"])
    scored = measurable(sets, stim)
    for label, ps in sets.items():
        if label not in scored:
            dist.append({"perturbation": label, "operation": ps.sentences["operation"].iloc[0],
                         "sentences": len(ps.sentences), "pairs": len(ps.pairs), "enough_pairs": False})
    if scored:  # one load of each checkpoint for every perturbed set
        extract(suite, list(scored.values()), steps, tuple(models), tuple(seeds), root=root, config=cfg,
                progress=progress)
    for label, ps in scored.items():
        where = {"suite": suite.name, "stimuli": ps.name, "condition": "intact", "step": list(steps),
                 "model": models, "seed": seeds}
        pairs = with_pairs(store.load("distances", **where), ps)
        bests.append(stage1.best_of(pairs).assign(perturbation=label))
        info = ps.sentences[["sentence_id", "source_id", "operation"]]
        heads.append(store.load("heads", **where).merge(info, on="sentence_id").assign(perturbation=label))
        tokens = cue_token_distance(ps, tok)
        op = ps.sentences["operation"].iloc[0]
        dist.append({"perturbation": label, "operation": op, "sentences": len(ps.sentences),
                     "pairs": len(ps.pairs), "enough_pairs": True, "tokens_median": float(tokens.median()),
                     "tokens_min": int(tokens.min()),
                     "tokens_max": int(tokens.max()),
                     "phrase_seen_in_training": bool(op == "separate" and
                                                     ps.sentences["parameter"].iloc[0] in seen)})
    intact = store.load("heads", suite=suite.name, stimuli=stim.name, condition="intact", step=list(steps),
                        model=models, seed=seeds)
    rob = head_robustness(intact, pd.concat(heads, ignore_index=True))
    stats = stage2.stats[["model", "seed", "layer", "head", "passes"]]
    rob = rob.merge(stats, on=["model", "seed", "layer", "head"], how="left").rename(columns={"passes": "discovered"})
    best = pd.concat(bests, ignore_index=True)
    return Perturbation(sets, pd.DataFrame(dist), best, retained_performance(best), rob, summary(rob))


def summary(rob: pd.DataFrame) -> pd.DataFrame:
    """At the last checkpoint, each discovered head's cue attention intact and under every perturbation (wide),
    with whether it is robust to each."""
    last = at_last_checkpoint(rob)
    last = last[last["discovered"].fillna(False).astype(bool)]
    if last.empty:
        return pd.DataFrame(columns=["model", "seed", "layer", "head", "intact"])
    wide = last.pivot_table(index=["model", "seed", "layer", "head"], columns="perturbation",
                            values="cue_perturbed").add_prefix("cue:")
    flags = last.pivot_table(index=["model", "seed", "layer", "head"], columns="perturbation",
                             values="robust", aggfunc="first").add_prefix("robust:")
    intact = last.groupby(["model", "seed", "layer", "head"])["cue_intact"].first().rename("intact")
    return pd.concat([intact, wide, flags], axis=1).reset_index()


def perturbation_report(s3: Perturbation) -> str:
    """Plain-text stage 3 (what ``lexprobe perturbation`` prints)."""
    lines = ["stage 3: perturbations (cue-target distance in tokens; share of the intact best-layer R^2 kept at the "
             "last checkpoint)"]
    lines.append(s3.distance.to_string(index=False))
    last = at_last_checkpoint(s3.retained)
    lines.append("")
    lines.append(last.pivot_table(index="seed", columns="perturbation", values="r2_retained").round(3).to_string())
    lines += ["", "each set's own R^2 at its first checkpoint (its words alone separating senses, before training):",
              at_last_checkpoint(s3.retained).pivot_table(index="seed", columns="perturbation",
                                                          values="r2_baseline").round(3).to_string(),
              "", "share of the intact gain over its baseline kept, (R^2 - baseline) / (intact - intact baseline):",
              last.pivot_table(index="seed", columns="perturbation", values="r2_retained_net").round(3).to_string()]
    for r in s3.distance[~s3.distance["enough_pairs"].astype(bool)].itertuples():
        lines.append(f"'{r.perturbation}': not enough pairs ({r.pairs}; at least {MIN_PAIRS} and {MIN_SHARE:.0%} of "
                     "the intact set's are needed): not scored")
    seen = s3.distance.loc[s3.distance["phrase_seen_in_training"].fillna(False).astype(bool), "perturbation"].tolist()
    for p in seen:
        kept = last[last["perturbation"] == p]
        ok = bool((kept["r2_retained"] >= 0.5).all())
        lines.append(f"'{p}' (phrase seen in training) keeps at least half of the intact R^2 in every seed: "
                     f"{'yes' if ok else 'NO'} (min {kept['r2_retained'].min():.3f})")
    lines.append("")
    lines.append("discovered heads at the last checkpoint: cue attention intact and per perturbation "
                 "(robust:* = paired one-sided t-test, BH q < .05 over the heads x perturbations of each seed and "
                 "checkpoint)")
    lines.append(s3.summary.to_string(index=False) if not s3.summary.empty else "  (no discovered heads)")
    return "\n".join(lines)
