"""Build the lexprobe noun stimulus pairs from the organism lexicon.

Reads ``../organism/lexicon.json`` (relative to this file) and writes
``lexprobe_nouns.csv`` next to this file. For every noun, its frame is filled
with the first two cues of each sense, giving four sentences (A1, A2, B1, B2).
All six unordered pairs are written in the fixed order A1-A2, B1-B2, A1-B1,
A1-B2, A2-B1, A2-B2. Nouns keep the lexicon order, so the output is
byte-for-byte identical on every run.

Usage: ``python3 data/stimuli/make_stimuli.py``
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LEXICON = HERE.parent / "organism" / "lexicon.json"
OUTPUT = HERE / "lexprobe_nouns.csv"

COLUMNS: list[str] = [
    "word",
    "sentence1",
    "sentence2",
    "same",
    "ambiguity_type",
    "disambiguating_word1",
    "disambiguating_word2",
    "Class",
    "mean_relatedness",
    "string",
]

# (index into the four sentences A1, A2, B1, B2) for each pair, in output order.
PAIRS: list[tuple[int, int]] = [(0, 1), (2, 3), (0, 2), (0, 3), (1, 2), (1, 3)]


def capitalise_first(text: str) -> str:
    """Upper-case only the first character of ``text``."""
    return text[:1].upper() + text[1:]


def fill(frame: str, cue: str, noun: str) -> str:
    """Fill a frame with a cue and a noun and capitalise the sentence."""
    return capitalise_first(frame.format(cue=cue, noun=noun))


def rows_for(entry: dict[str, Any]) -> list[list[str]]:
    """Return the six CSV rows for one lexicon noun."""
    noun: str = entry["word"]
    frame: str = entry["frame"]
    sense_a, sense_b = entry["senses"]
    items: list[tuple[str, str, str]] = []  # (sense label, cue, sentence)
    for sense in (sense_a, sense_b):
        for cue in sense["cues"][:2]:
            items.append((sense["label"], cue, fill(frame, cue, noun)))
    rows: list[list[str]] = []
    for i, j in PAIRS:
        label1, cue1, sent1 = items[i]
        label2, cue2, sent2 = items[j]
        rows.append(
            [
                noun,
                sent1,
                sent2,
                "TRUE" if label1 == label2 else "FALSE",
                entry["ambiguity_type"],
                cue1,
                cue2,
                "N",
                "",
                noun,
            ]
        )
    return rows


def main() -> None:
    """Read the lexicon and write the stimulus CSV."""
    with LEXICON.open(encoding="utf-8") as handle:
        lexicon: dict[str, Any] = json.load(handle)
    with OUTPUT.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for entry in lexicon["nouns"]:
            writer.writerows(rows_for(entry))


if __name__ == "__main__":
    main()
