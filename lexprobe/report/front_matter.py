"""What a reader needs before the stages: what the model is (the organism, said once), how each number is computed
(the methods box, from the study's own settings), what the terms mean (the glossary) and what the stimuli look like
(one sentence intact, under each perturbation and as its counterfactual)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from lexprobe.analysis.nulls import REGRESSION_DRAWS
from lexprobe.analysis.selection import ALPHA
from lexprobe.checkpoints.suites import Suite
from lexprobe.organism.profiles import PROFILES
from lexprobe.report.perturbation_report import roles
from lexprobe.stages.registry import Skipped

if TYPE_CHECKING:
    from lexprobe.study import Study


def organism_words(suite: Suite) -> str:
    """The suite in one paragraph; for lexprobe's organism, what it is and that it is no public model."""
    profile = PROFILES.get(str(suite.metadata.get("profile", "")))
    if profile is None:
        return (f"Suite {suite.name}: models {', '.join(suite.models)}, seeds {list(suite.seeds)}, "
                f"{len(suite.steps)} checkpoints (steps {suite.steps[0]} to {suite.steps[-1]}).")
    plant = ("no head is planted: whatever heads carry the cue's sense, the model found them by training"
             if profile.plant is None else "a circuit is planted: designated heads are trained to carry the cue, and "
             "the validation section scores every method against them")
    return (f"The model is lexprobe's offline developmental model organism (profile '{profile.name}', model name "
            f"'{profile.model}'; lexprobe's own, shaped like but not EleutherAI's Pythia-14M): a "
            f"{profile.layers}-layer, {profile.heads}-head {profile.arch} transformer (hidden size "
            f"{profile.hidden_size}, vocabulary {profile.vocab_size}) trained from scratch by lexprobe on CPU for "
            f"{profile.total_steps} steps ({len(suite.seeds)} seeds, {len(suite.steps)} checkpoints each) on a "
            f"synthetic corpus of ambiguous nouns with sense cues. From step {profile.onset} on (the corpus onset) "
            f"the cue predicts the sense of the words that follow the noun; before it, nothing rewards "
            f"disambiguation. In this suite {plant}. It stands in for a checkpoint suite like Pythia's, so that every "
            "stage runs offline in minutes; its numbers are about the organism, not about any public model.")


def methods(study: Study) -> pd.DataFrame:
    """The methods box: what each stage computes and with how many draws, from the study's settings (the
    permutations stage 2 ran, where it ran: it raises them to what its FDR needs)."""
    s2 = study.outcome("discovery")
    n_perm = study.n_perm if isinstance(s2, Skipped) or "n_perm" not in s2.stats else int(s2.stats["n_perm"].min())
    rows = [
        ("1", "score", "R²: the squared correlation between the noun's contextual cosine distance in a sentence "
                       "pair and the pair's target (same vs different sense, or mean human relatedness), per layer; "
                       "the best layer per checkpoint"),
        ("1", "onset", "curve models (flat, linear, segmented with 1-3 breaks, logistic) fitted to the best-layer "
                       "score on log10(step + 1), chosen by AICc; the onset is where the rise starts"),
        ("1", "intervals", f"profile likelihood (95%) and an item bootstrap over nouns ({study.n_boot} draws)"),
        ("2", "discovery", "per head, the correlation across checkpoints of its attention from the noun to the cue "
                           f"with the best-layer R²; BH-FDR over the heads of a seed (q < {ALPHA}); the trend "
                           f"control on first differences, with a permutation null ({n_perm} shuffles)"),
        ("3", "perturbation", "the same pairs with the cue moved, reframed or replaced by a neutral word (the "
                              "control); share of the intact R² kept, net of each set's R² before training"),
        ("4", "QK edits", f"the discovered heads' query/key rows zeroed (qk-zero) or set back to an early "
                          f"checkpoint (qk-copy) vs {study.n_random} random same-size sets at the last checkpoint "
                          f"({study.n_random_dev} at the others); rank p, smallest 1/(n + 1)"),
        ("4", "regression", "drop ~ log10(step + 1) + discovered-vs-random across checkpoints; p from a two-way "
                            f"cluster bootstrap over checkpoints and random sets ({REGRESSION_DRAWS} draws)"),
        ("4", "patching", f"one head's output at the noun swapped between a sentence and its counterfactual; "
                          f"paired item bootstrap ({study.n_boot} draws), BH-FDR over heads"),
        ("5", "seeds", "Cochran's Q over onsets; Jaccard of discovered heads vs permutation nulls within layers and "
                       "anywhere; Fisher's combined p of stage 4's per-seed tests; a mixed model over seeds"),
    ]
    return pd.DataFrame(rows, columns=["stage", "what", "how"])


GLOSSARY = {
    "R²": "how well the noun's contextual distances between two sentences predict whether its senses are the same",
    "best layer": "the layer with the highest R² at a checkpoint",
    "onset": "the step at which the best-layer R² starts to rise (stage 1's inflection)",
    "saturation": "where the rise levels off; censored when it still rises at the last checkpoint (then a bound)",
    "segmented fit": "a curve of straight pieces on log10(step + 1); its breaks give the onset",
    "corpus onset": "the organism's training step from which its corpus makes the cue informative",
    "discovered head": "a head that passes stage 2's rule (its cue attention tracks R² across training)",
    "previous-token control": "does the head attend to the cue more than to the token before the noun?",
    "q": "a Benjamini-Hochberg adjusted p value (false discovery rate)",
    "baseline-net share": "share of the intact gain over the untrained baseline that a perturbed set keeps",
    "control (stage 3)": "the cue replaced by a neutral word: it should keep nothing; not a perturbation",
    "qk-zero / qk-copy": "the discovered heads' query and key rows zeroed / copied from an early checkpoint",
    "noising": "patching one head's output from the counterfactual into the real run: is it necessary?",
    "denoising": "patching one head's real output into the counterfactual run: is it sufficient?",
    "share": "the fraction of the R² above the counterfactual that a patch removes (noising) or restores",
    "greedy set": "heads added one by one, each the best next, until denoising them restores 80% of R²",
    "reading": "how a set works: AND (removing any member alone removes half of it), OR (each member alone "
               "restores half), distributed (no member alone does either), mixed (otherwise)",
    "decoy": "a planted head trained to attend like a carrier that carries nothing (validation only)",
    "Jaccard": "shared heads / all heads named, between two seeds",
    "Fisher's combined p": "one p value for a test repeated in every seed",
}


def glossary() -> pd.DataFrame:
    return pd.DataFrame(list(GLOSSARY.items()), columns=["term", "meaning"])


def example_stimuli(outcomes: dict[str, Any], n: int = 2) -> pd.DataFrame:
    """The first ``n`` sentences of the stimuli as they are measured: intact, under each perturbation (stage 3)
    and as the counterfactual that patching swaps in (stage 4)."""
    s1 = outcomes["inflection"]
    intact = s1.stimuli.sentences.head(n)
    rows = [{"sentence": int(r.sentence_id), "set": "intact", "role": "measured", "text": r.sentence}
            for r in intact.itertuples()]
    sets: dict[str, tuple[str, Any]] = {}
    if not isinstance(s3 := outcomes.get("perturbation"), Skipped | None):
        of = roles(s3)
        sets |= {name: (of.get(name, "perturbation"), st) for name, st in s3.sets.items()}
    if not isinstance(s4 := outcomes.get("causal"), Skipped | None):
        sets["counterfactual"] = ("patching", s4.patching.counterfactual)
    for name, (role, st) in sets.items():
        short = name.split("+")[-1]
        for r in st.sentences[st.sentences["source_id"].isin(intact["sentence_id"])].itertuples():
            rows.append({"sentence": int(r.source_id), "set": short, "role": role, "text": r.sentence})
    return pd.DataFrame(rows).sort_values(["sentence"], kind="stable").reset_index(drop=True)
