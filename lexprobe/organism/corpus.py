"""Synthetic corpus for the organism: ambiguous nouns with cues, sense-specific continuations, fillers.

Each sentence puts an ambiguous noun in a neutral frame with a sense cue placed in one of several ways, followed by
a continuation. The **planted onset**: before training step ``onset`` the continuation's sense is drawn
independently of the cue's sense, so nothing rewards disambiguation; from ``onset`` on it matches the cue's sense.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lexprobe.base.paths import data_dir
from lexprobe.stimuli.tables import fill

PLACEMENTS = ("adjacent", "separated", "clause", "bare")


@dataclass(frozen=True)
class Sense:
    label: str
    cues: tuple[str, ...]
    continuations: tuple[str, ...]


@dataclass(frozen=True)
class Noun:
    word: str
    ambiguity_type: str
    frame: str
    senses: tuple[Sense, ...]


@dataclass(frozen=True)
class Lexicon:
    nouns: tuple[Noun, ...]
    frames: tuple[str, ...]
    filler: tuple[str, ...]
    hash: str

    def noun(self, word: str) -> Noun:
        for n in self.nouns:
            if n.word == word:
                return n
        raise KeyError(f"noun {word!r} is not in the organism lexicon")


def load_lexicon(path: str | Path | None = None) -> Lexicon:
    """Read and check the lexicon JSON (``data/organism/lexicon.json`` by default)."""
    p = Path(path) if path else data_dir() / "organism" / "lexicon.json"
    raw = p.read_bytes()
    doc = json.loads(raw)
    nouns = []
    for i, n in enumerate(doc["nouns"]):
        senses = tuple(Sense(s["label"], tuple(s["cues"]), tuple(s["continuations"])) for s in n["senses"])
        if len(senses) < 2 or any(len(s.cues) < 2 or not s.continuations for s in senses):
            raise ValueError(f"{p}: noun #{i} {n.get('word')!r} needs >= 2 senses, "
                             "each with >= 2 cues and a continuation")
        if "{cue} {noun}" not in n["frame"]:
            raise ValueError(f"{p}: noun {n['word']!r} frame {n['frame']!r} lacks '{{cue}} {{noun}}'")
        nouns.append(Noun(n["word"], n["ambiguity_type"], n["frame"], senses))
    return Lexicon(tuple(nouns), tuple(doc["frames"]), tuple(doc["filler"]), hashlib.sha256(raw).hexdigest()[:16])


@dataclass(frozen=True)
class CorpusConfig:
    """How sentences are drawn; ``onset`` is the planted step where continuations start to depend on sense."""

    onset: int
    cues_per_sense: int = 3  # the first N cues of each sense (the first two are the probe stimuli's cues)
    p_filler: float = 0.1
    placements: dict[str, float] = field(default_factory=lambda: {"adjacent": 0.6, "separated": 0.15,
                                                                   "clause": 0.15, "bare": 0.1})
    separators: tuple[str, ...] = ("kind of", "sort of", "type of", "and rather old", "and very quiet")

    def __post_init__(self) -> None:
        bad = set(self.placements) - set(PLACEMENTS)
        if bad or not np.isclose(sum(self.placements.values()), 1.0):
            raise ValueError(f"placements must be proportions over {PLACEMENTS} summing to 1, got {self.placements}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Span = tuple[int, int]  # [start, end) character offsets in a sample's text


@dataclass(frozen=True)
class Sample:
    """One generated sentence and its ground truth, with where its noun and cue stand in ``text``."""

    text: str
    noun: str | None
    sense: int | None  # sense of the cue (None for fillers and bare nouns)
    continuation_sense: int | None
    placement: str
    noun_span: Span | None = None
    cue_span: Span | None = None


class Corpus:
    """Draws sentences for a given training step."""

    def __init__(self, lexicon: Lexicon, config: CorpusConfig):
        self.lexicon = lexicon
        self.config = config
        self._placements = list(config.placements)
        self._p = np.array([config.placements[k] for k in self._placements])

    def sample(self, rng: np.random.Generator, step: int) -> Sample:
        """One sentence as seen at training ``step``."""
        if rng.random() < self.config.p_filler:
            return Sample(str(rng.choice(self.lexicon.filler)), None, None, None, "filler")
        noun = self.lexicon.nouns[rng.integers(len(self.lexicon.nouns))]
        placement = self._placements[rng.choice(len(self._placements), p=self._p)]
        sense = int(rng.integers(len(noun.senses)))
        informative = step >= self.config.onset and placement != "bare"
        cont_sense = sense if informative else int(rng.integers(len(noun.senses)))
        cue = str(rng.choice(noun.senses[sense].cues[: self.config.cues_per_sense]))
        cont = str(rng.choice(noun.senses[cont_sense].continuations))
        frame = noun.frame if rng.random() < 0.5 else str(rng.choice(self.lexicon.frames))
        body = frame[:-1]  # drop the final period: the continuation follows the noun
        if placement == "adjacent":
            template = body
        elif placement == "separated":
            template = body.replace("{cue} ", f"{{cue}} {rng.choice(self.config.separators)} ")
        elif placement == "clause":
            inner = body.replace("{cue} ", "")
            template = f"It was {{cue}}, and {inner[0].lower()}{inner[1:]}"
        else:
            template = body.replace("{cue} ", "")
        text, spans = fill(template, cue=cue, noun=noun.word)
        return Sample(f"{text} {cont}.", noun.word, None if placement == "bare" else sense, cont_sense, placement,
                      spans["noun"], spans.get("cue"))

    def samples(self, rng: np.random.Generator, step: int, n: int) -> list[Sample]:
        return [self.sample(rng, step) for _ in range(n)]

    def texts(self, rng: np.random.Generator, step: int, n: int) -> list[str]:
        return [s.text for s in self.samples(rng, step, n)]
