"""Stimulus tables: load and validate pair tables (RAW-C schema), derive sentence tables, hash for provenance.

Two shapes are used throughout lexprobe:

* **pair table** (RAW-C schema): one row per sentence pair, columns :data:`PAIR_COLUMNS`.
* **sentence table**: one row per distinct sentence, columns :data:`SENTENCE_COLUMNS`, with a ``sense``
  label derived from the pairs' ``same`` column (sentences linked by same-sense pairs share a label), optionally
  followed by extra per-sentence columns (e.g. the provenance of a perturbed set, see :mod:`lexprobe.stimuli.perturb`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import string
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lexprobe.base.paths import data_dir

log = logging.getLogger(__name__)

PAIR_COLUMNS = [
    "word", "sentence1", "sentence2", "same", "ambiguity_type",
    "disambiguating_word1", "disambiguating_word2", "Class", "mean_relatedness", "string",
]
SENTENCE_COLUMNS = ["sentence_id", "word", "sentence", "string", "cue", "Class", "sense", "ambiguity_type"]
SHIPPED = "lexprobe_nouns"

_TRUE = {"true", "t", "1", "yes", "same"}
_FALSE = {"false", "f", "0", "no", "different"}


class StimulusError(ValueError):
    """A stimulus table is malformed; the message names the file, row and problem."""


@dataclass(frozen=True)
class StimulusSets:
    """Stimulus sets derived from one set (perturbed sets, a counterfactual), by key: what a study keeps in its
    stage cache, since making them checks every sentence against a tokenizer."""

    sets: dict[str, Stimuli]


@dataclass(frozen=True)
class Stimuli:
    """A validated stimulus set: pair table, sentence table, name and content hash."""

    name: str
    pairs: pd.DataFrame
    sentences: pd.DataFrame
    hash: str

    def subset(self, words: list[str], name: str | None = None) -> Stimuli:
        """The same stimuli restricted to some target words (hash recomputed, extra sentence columns kept)."""
        pairs = self.pairs[self.pairs["word"].isin(words)].reset_index(drop=True)
        extra = [c for c in self.sentences.columns if c not in SENTENCE_COLUMNS]
        info = self.sentences[["word", "sentence", *extra]] if extra else None
        return from_pairs(pairs, name=name or f"{self.name}-{len(words)}w", sentence_info=info)


def word_pattern(word: str) -> re.Pattern[str]:
    """Regex matching ``word`` as a whole word (letters/digits/apostrophes do not continue it)."""
    return re.compile(r"(?<![\w'])" + re.escape(word) + r"(?![\w'])")


def find_word(sentence: str, word: str, inflected: bool = False) -> list[tuple[int, int]]:
    """Character spans of whole-word occurrences of ``word``; ``inflected`` also accepts ``word``+suffix."""
    spans = [m.span() for m in word_pattern(word).finditer(sentence)]
    if not spans and inflected:
        spans = [m.span() for m in re.finditer(r"(?<![\w'])" + re.escape(word) + r"\w*", sentence)]
    return spans


def locate(sentence: str, target: str, cue: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Spans (target, cue): the first target occurrence preceded by the cue, and the cue nearest before it.

    Returns None when no target occurrence has the cue before it. The cue may be inflected in the sentence
    ("marinate" matches "marinated"); the target must match its surface string exactly (case-insensitive
    fallback for sentence-initial capitals).
    """
    targets = find_word(sentence, target) or find_word(sentence.lower(), target.lower())
    cues = find_word(sentence, cue, inflected=True) or find_word(sentence.lower(), cue.lower(), inflected=True)
    for t in targets:
        before = [c for c in cues if c[1] <= t[0]]
        if before:
            return t, before[-1]
    return None


def fill(template: str, **values: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """``template.format(**values)`` and the [start, end) character span of each field's value in the result."""
    out, spans = "", {}
    for literal, name, _, _ in string.Formatter().parse(template):
        out += literal
        if name is not None:
            spans[name] = (len(out), len(out) + len(values[name]))
            out += values[name]
    return out, spans


def _as_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise StimulusError(f"{where}: column 'same' must be TRUE/FALSE, got {value!r}")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV stimulus file with clear errors for missing, empty or non-UTF-8 files."""
    text = str(path)
    if re.match(r"^[a-z]+://", text):
        raise StimulusError(
            f"{text}: lexprobe does not download stimuli (no network access is assumed). Download the file "
            "yourself (for RAW-C: the CSV from the authors' public repository, Trott & Bergen 2021) and pass "
            "its local path."
        )
    p = Path(path)
    if not p.is_file():
        raise StimulusError(f"{p}: no such file")
    raw = p.read_bytes()
    try:
        decoded = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise StimulusError(f"{p}: not UTF-8 (byte {err.start}, line {line}); re-save the file as UTF-8") from err
    if not decoded.strip():
        raise StimulusError(f"{p}: file is empty")
    from io import StringIO

    try:
        df = pd.read_csv(StringIO(decoded), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as err:
        raise StimulusError(f"{p}: not a valid CSV ({err})") from err
    if df.empty:
        raise StimulusError(f"{p}: header only, no rows")
    return df


def validate_pairs(df: pd.DataFrame, source: str = "<table>") -> pd.DataFrame:
    """Validate a pair table and return a cleaned copy.

    Errors name the source and the 1-based data row of the file (CSV line = row + 1; a ``_row`` column, set by
    :func:`load_rawc` before filtering, keeps file rows). Pairs where a cue does not precede the target are
    excluded with one counted warning, because a causal LM cannot use a later cue.
    """
    missing = [c for c in PAIR_COLUMNS if c not in df.columns and c != "mean_relatedness"]
    if missing:
        raise StimulusError(f"{source}: missing columns {missing}; expected RAW-C columns {PAIR_COLUMNS}")
    if len(df) == 0:
        raise StimulusError(f"{source}: no rows")
    out = df.copy()
    rows = out.pop("_row").tolist() if "_row" in out.columns else list(range(1, len(out) + 1))
    if "mean_relatedness" not in out.columns:
        out["mean_relatedness"] = ""
    keep: list[bool] = []
    late: list[int] = []
    seen: dict[tuple[str, str], int] = {}
    same_vals, rel_vals = [], []
    for i, row in zip(rows, out.itertuples(index=False)):
        where = f"{source} row {i} (word {row.word!r})"
        for col in ("word", "sentence1", "sentence2", "string", "disambiguating_word1", "disambiguating_word2"):
            if not str(getattr(row, col)).strip():
                raise StimulusError(f"{where}: column {col!r} is empty")
        same_vals.append(_as_bool(row.same, where))
        rel = str(row.mean_relatedness).strip()
        try:
            rel_vals.append(float(rel) if rel not in ("", "NA", "nan") else float("nan"))
        except ValueError as err:
            raise StimulusError(f"{where}: mean_relatedness {rel!r} is not a number") from err
        key = tuple(sorted((row.sentence1, row.sentence2)))
        if key in seen:
            raise StimulusError(f"{where}: duplicate of row {seen[key]} (same sentence pair)")
        seen[key] = i
        ok = True
        for n in (1, 2):
            sent, cue = getattr(row, f"sentence{n}"), getattr(row, f"disambiguating_word{n}")
            if not (find_word(sent, row.string) or find_word(sent.lower(), row.string.lower())):
                raise StimulusError(f"{where}: target string {row.string!r} not found in sentence{n} {sent!r}")
            if not (find_word(sent, cue, True) or find_word(sent.lower(), cue.lower(), True)):
                raise StimulusError(f"{where}: cue {cue!r} not found in sentence{n} {sent!r}")
            if locate(sent, row.string, cue) is None:
                ok = False
        keep.append(ok)
        if not ok:
            late.append(i)
    out["same"] = same_vals
    out["mean_relatedness"] = rel_vals
    if late:
        warnings.warn(
            f"{source}: excluded {len(late)} pair(s) whose cue comes after the target (useless to a causal LM), "
            f"rows {late[:10]}{' ...' if len(late) > 10 else ''}",
            stacklevel=2,
        )
    out = out[keep].reset_index(drop=True)
    if out.empty:
        raise StimulusError(f"{source}: no usable pairs left after excluding cue-after-target pairs")
    return out[PAIR_COLUMNS + [c for c in out.columns if c not in PAIR_COLUMNS]]


def pairs_to_sentences(pairs: pd.DataFrame) -> pd.DataFrame:
    """Sentence table from a validated pair table; ``sense`` labels are the same-sense components per word."""
    rows: dict[tuple[str, str], dict] = {}
    for r in pairs.itertuples(index=False):
        for n in (1, 2):
            sent = getattr(r, f"sentence{n}")
            key = (r.word, sent)
            cue = getattr(r, f"disambiguating_word{n}")
            if key in rows and rows[key]["cue"] != cue:
                raise StimulusError(f"sentence {sent!r} appears with two cues: {rows[key]['cue']!r} and {cue!r}")
            rows.setdefault(key, {"word": r.word, "sentence": sent, "string": r.string, "cue": cue,
                                  "Class": r.Class, "ambiguity_type": r.ambiguity_type})
    parent = {k: k for k in rows}

    def root(k: tuple[str, str]) -> tuple[str, str]:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for r in pairs.itertuples(index=False):
        if r.same:
            a, b = root((r.word, r.sentence1)), root((r.word, r.sentence2))
            parent[max(a, b)] = min(a, b)
    sense_ids: dict[tuple[str, str], int] = {}
    counters: dict[str, int] = {}
    for key in rows:
        rt = root(key)
        if rt not in sense_ids:
            sense_ids[rt] = counters.get(key[0], 0)
            counters[key[0]] = sense_ids[rt] + 1
        rows[key]["sense"] = sense_ids[rt]
    df = pd.DataFrame(list(rows.values()))
    df.insert(0, "sentence_id", range(len(df)))
    return df[SENTENCE_COLUMNS]


def pair_index(pairs: pd.DataFrame, sentences: pd.DataFrame) -> pd.DataFrame:
    """Pairs with integer ``s1``/``s2`` sentence ids and a ``pair_id`` column."""
    ids = {(w, s): i for i, w, s in sentences[["sentence_id", "word", "sentence"]].itertuples(index=False)}
    out = pairs.drop(columns=["pair_id", "s1", "s2"], errors="ignore")
    out.insert(0, "pair_id", range(len(out)))
    out["s1"] = [ids[(w, s)] for w, s in zip(out["word"], out["sentence1"])]
    out["s2"] = [ids[(w, s)] for w, s in zip(out["word"], out["sentence2"])]
    return out


def content_hash(pairs: pd.DataFrame) -> str:
    """SHA-256 (first 16 hex) of the pair table's content, independent of file formatting."""
    canon = pairs[PAIR_COLUMNS].astype(str).to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


def attach_sentence_info(sentences: pd.DataFrame, info: pd.DataFrame, source: str = "<table>") -> pd.DataFrame:
    """The sentence table with extra per-sentence columns from ``info`` (keyed by ``word`` and ``sentence``).

    Every sentence must have exactly one ``info`` row; extra columns may not shadow :data:`SENTENCE_COLUMNS`.
    """
    extra = [c for c in info.columns if c not in ("word", "sentence")]
    clash = [c for c in extra if c in SENTENCE_COLUMNS]
    if clash:
        raise StimulusError(f"{source}: extra sentence columns {clash} would shadow the sentence table's own")
    dup = info.duplicated(["word", "sentence"], keep=False)
    if dup.any():
        raise StimulusError(f"{source}: sentence info has several rows for {info.loc[dup, 'sentence'].iloc[0]!r}")
    out = sentences.merge(info, on=["word", "sentence"], how="left", indicator=True)
    missing = out.loc[out["_merge"] != "both", "sentence_id"].tolist()
    if missing:
        raise StimulusError(f"{source}: no sentence info for sentence_id {missing[:10]}")
    return out.drop(columns="_merge")[SENTENCE_COLUMNS + extra]


def from_pairs(pairs: pd.DataFrame, name: str, source: str | None = None,
               sentence_info: pd.DataFrame | None = None) -> Stimuli:
    """Validate a pair table and build a :class:`Stimuli`; ``sentence_info`` adds extra per-sentence columns
    (see :func:`attach_sentence_info`)."""
    clean = validate_pairs(pairs, source or name)
    sentences = pairs_to_sentences(clean)
    if sentence_info is not None:
        sentences = attach_sentence_info(sentences, sentence_info, source or name)
    return Stimuli(name=name, pairs=pair_index(clean, sentences), sentences=sentences, hash=content_hash(clean))


def load_rawc(path: str | Path, nouns_only: bool = True) -> Stimuli:
    """Load the RAW-C CSV as published (or any file in its schema); by default keep Class N only."""
    df = read_table(path)
    df["_row"] = range(1, len(df) + 1)
    if nouns_only and "Class" in df.columns:
        df = df[df["Class"].str.strip().str.upper() == "N"].reset_index(drop=True)
        if df.empty:
            raise StimulusError(f"{path}: no rows with Class N")
    return from_pairs(df, name=Path(str(path)).stem, source=str(path))


def load_stimuli(spec: str | Path = SHIPPED) -> Stimuli:
    """Load stimuli by shipped name (``lexprobe_nouns``) or by CSV path."""
    p = Path(spec)
    if p.suffix.lower() != ".csv":
        p = data_dir() / "stimuli" / f"{spec}.csv"
        if not p.is_file():
            raise StimulusError(f"no shipped stimulus set named {spec!r} (looked for {p})")
    return load_rawc(p)
