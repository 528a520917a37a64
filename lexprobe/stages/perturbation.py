"""Stage 3 runner and view: measure perturbed stimulus sets across development and test the discovered heads'
robustness.

Each perturbed set (:func:`lexprobe.stimuli.perturb.standard_set` by default) is extracted through the results store
under
its own stimuli name (cached like any extraction); :mod:`lexprobe.analysis.robustness` does the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from lexprobe.analysis.performance import with_pairs
from lexprobe.analysis.primitives import at_last_checkpoint
from lexprobe.analysis.robustness import head_robustness, retained_performance
from lexprobe.checkpoints.suites import load_tokenizer, log_subset
from lexprobe.stages.costs import Costing, StageCost
from lexprobe.stages.discovery import Discovery
from lexprobe.stages.inflection import Inflection
from lexprobe.stages.registry import Context, Plugin, Prepared, Reads, parts_skipped, ran
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
    parts_skipped: pd.DataFrame  # part, needs, reason: what was left out because stage 2 was skipped


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


class PerturbationStage(Plugin):
    """Stage 3: every perturbed set (:func:`perturbed_sets`, made once per tokenizer and kept in the stage cache)
    extracted at :func:`perturbation_steps` into the study's results store under the study's baseline condition and
    compared with the unperturbed set, best layers chosen by the study's scoring rule. Without stage 2 the perturbed
    sets are still scored and every head's cue attention tested; only the discovered heads' summary is left out."""

    label = "stage 3"
    aliases, summary = (), "stage 3: the heads under perturbed stimuli (cue separated, reframed, neutral)"
    name, title, result = "perturbation", "Are the heads robust to perturbation?", Perturbation
    needs, uses, reads = ("inflection",), ("discovery",), ("perturb_steps",)

    def prepare(self, study: Context, earlier: dict[str, Any]) -> Prepared:
        s1: Inflection = earlier["inflection"]
        n_steps = study.perturb_steps
        steps = perturbation_steps(s1, n_steps)
        sets = study.derived("perturbation-sets", steps[-1], lambda: perturbed_sets(s1, n_steps))
        on = (study.baseline.condition,)
        reads = [Reads(m, ps.name, on, steps) for ps in measurable(sets, s1.stimuli).values()
                 for m in ("distances", "heads")]
        reads.append(Reads("heads", s1.stimuli.name, on, steps))
        return Prepared(reads, inputs={"sets": {k: ps.hash for k, ps in sets.items()}},
                        data={"sets": sets, "steps": steps})

    def run(self, study: Context, earlier: dict[str, Any], prepared: Prepared) -> Perturbation:
        s1: Inflection = earlier["inflection"]
        s2: Discovery | None = ran(earlier, "discovery")
        suite, stim, store, condition = study.checkpoint_suite, s1.stimuli, study.store, study.baseline.condition
        sets: dict[str, Stimuli] = prepared.data["sets"]
        steps: tuple[int, ...] = prepared.data["steps"]
        tok = load_tokenizer(s1.tokenizer_at(steps[-1]))
        cfg = replace(study.config, save_embeddings=False)
        models, seeds = list(s1.best["model"].unique()), [int(s) for s in s1.best["seed"].unique()]
        bests, heads, dist = [s1.best.assign(perturbation="intact")], [], []
        seen = set(load_phrases().query("in_organism_corpus")["phrase"])
        scored = measurable(sets, stim)
        for label, ps in sets.items():
            if label not in scored:
                dist.append({"perturbation": label, "operation": ps.sentences["operation"].iloc[0],
                             "sentences": len(ps.sentences), "pairs": len(ps.pairs), "enough_pairs": False})
        if scored:  # one load of each checkpoint for every perturbed set
            extract(suite, list(scored.values()), steps, tuple(models), tuple(seeds), root=store.root, config=cfg,
                    conditions=[study.baseline], progress=study.progress)
        for label, ps in scored.items():
            where = {"suite": suite.name, "stimuli": ps.name, "condition": condition, "step": list(steps),
                     "model": models, "seed": seeds}
            pairs = with_pairs(store.load("distances", **where), ps)
            bests.append(study.scoring.best(pairs).assign(perturbation=label))
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
        intact = store.load("heads", suite=suite.name, stimuli=stim.name, condition=condition, step=list(steps),
                            model=models, seed=seeds)
        rob = head_robustness(intact, pd.concat(heads, ignore_index=True))
        if s2 is None:
            rob = rob.assign(discovered=pd.NA)
        else:
            stats = s2.stats[["model", "seed", "layer", "head", "passes"]].rename(columns={"passes": "discovered"})
            rob = rob.merge(stats, on=["model", "seed", "layer", "head"], how="left")
        best = pd.concat(bests, ignore_index=True)
        return Perturbation(sets, pd.DataFrame(dist), best, retained_performance(best), rob, summary(rob),
                            parts_skipped(earlier, {"the discovered heads' summary": "discovery"}))


    def cost(self, study: Context, costing: Costing) -> StageCost:
        """Each measurable standard set at the perturbation checkpoints: one load per checkpoint for every set."""
        out, suite, stim = StageCost(self.name), study.checkpoint_suite, study.stimulus_set
        sets = measurable(standard_set(stim), stim)
        steps = log_subset(study.checkpoints, study.perturb_steps) if study.perturb_steps else study.checkpoints
        n = len(suite.seeds) * len(steps)
        for m in costing.models:
            out.seconds += n * m.load_seconds / costing.workers
            for ps in sets.values():
                seconds, tables = m.scaled(stim, ps)
                out.add(n, n * len(ps.sentences), n * 3, n * (tables["distances"] + tables["heads"]),
                        n * seconds / costing.workers)  # files: manifest, distances, heads
        return out


STAGE = PerturbationStage()


def summary(rob: pd.DataFrame) -> pd.DataFrame:
    """At the last checkpoint, each discovered head's cue attention intact and under every perturbation (wide),
    with whether it is robust to each moved cue and whether it passes the neutral-word control."""
    last = at_last_checkpoint(rob)
    last = last[last["discovered"].fillna(False).astype(bool)]
    if last.empty:
        return pd.DataFrame(columns=["model", "seed", "layer", "head", "intact"])
    wide = last.pivot_table(index=["model", "seed", "layer", "head"], columns="perturbation",
                            values="cue_perturbed").add_prefix("cue:")
    moved, control = last[last["role"] == "perturbation"], last[last["role"] == "control"]
    flags = [moved.pivot_table(index=["model", "seed", "layer", "head"], columns="perturbation",
                               values="passes", aggfunc="first").add_prefix("robust:")]
    if len(control):
        flags.append(control.pivot_table(index=["model", "seed", "layer", "head"], columns="perturbation",
                                         values="passes", aggfunc="first").add_prefix("control cue>"))
    intact = last.groupby(["model", "seed", "layer", "head"])["cue_intact"].first().rename("intact")
    return pd.concat([intact, wide, *flags], axis=1).reset_index()


