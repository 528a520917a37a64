"""Perturbed stimulus sets with provenance: move, replace or re-frame the cue of every sentence of a set.

Each operation takes a validated :class:`~lexprobe.stimuli.tables.Stimuli` and returns a new one, named
``<source name>+<label>`` (a safe path segment; the label is derived from the operation and its parameters), whose
pairs are the source pairs with both sentences rewritten:

* :func:`separate` inserts a phrase right before the target ("the muddy bank" -> "the muddy kind of bank");
* :func:`neutral` replaces a cue that stands right before the target by a sense-neutral modifier ("the old bank");
  each noun's distinct cues get distinct neutral words, drawn per noun with a seed, so sentences stay distinct
  and the neutral word carries no sense information across nouns;
* :func:`frame` moves the cue out of modifier position with a template ("It was muddy there, and we talked about
  the bank."), read from a user-editable CSV (``data/perturb/frames.csv`` by default, see its datasheet).

Every rewritten sentence is validated like a stimulus (target present, cue before it,
:func:`~lexprobe.stimuli.tables.locate`
finds exactly the words the operation placed; with a tokenizer, :func:`lexprobe.stimuli.align.align` must work for the
cue
and for the control word). A sentence that fails is dropped, and pairs that lose a sentence are dropped, reported
in one :class:`PerturbationWarning` per call that counts and names them.

Sentence table of a perturbed set: :data:`~lexprobe.stimuli.tables.SENTENCE_COLUMNS`, then

* ``source_id``: ``sentence_id`` of the sentence it was made from (in the source set);
* ``source_sentence``, ``source_cue``: that sentence and its cue;
* ``operation``: ``separate`` | ``neutral`` | ``frame``;
* ``parameter``: the inserted phrase, the neutral word, or the template;
* ``cue_offset``: words from the cue to the target in this sentence (1 = the cue is the word right before it);
* ``source_cue_offset``: the same in the source sentence;
* ``control``: the **position-matched control**, the word that now stands where the cue stood relative to the
  target (``source_cue_offset`` words before it): for ``separate`` the phrase's last word ("of"), for ``frame`` the
  frame's word before the target ("the"), for ``neutral`` the neutral word itself (it took the cue's place).
  Attention to it separates "attends to the cue" from "attends to that position"; in an intact set the cue is its
  own control. :func:`position_control` gives the table whose ``cue`` is the control, so
  ``lexprobe.stimuli.align.encode(tok, position_control(sentences)).cue_mask`` marks the control's tokens in the same
  padded layout as the cue mask of ``encode(tok, sentences)``;
* ``phrase_words`` (``separate`` only): words in the inserted phrase.

The ``cue`` column holds the word that now does the cue's job for the engine: the moved cue (``separate``,
``frame``) or the neutral word (``neutral``). Pair tables gain ``source_pair_id``. Word counts are whitespace-free
runs of letters, digits and apostrophes; :func:`cue_token_distance` gives distances in tokens for a tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from lexprobe.base.paths import data_dir
from lexprobe.stimuli.tables import Stimuli, StimulusError, fill, from_pairs, locate, read_table

if TYPE_CHECKING:  # the data layer knows no suite: the tokenizer's type straight from transformers
    from transformers import PreTrainedTokenizerBase

OPERATIONS = ("separate", "neutral", "frame")
NEUTRAL_WORDS = ("old", "new", "whole", "small", "first", "little")
PROVENANCE_COLUMNS = ["source_id", "source_sentence", "source_cue", "operation", "parameter", "cue_offset",
                      "source_cue_offset", "control"]
TEMPLATE_FIELDS = ("cue", "frame", "noun")

_WORD = re.compile(r"[\w']+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}")

Span = tuple[int, int]


class PerturbationWarning(UserWarning):
    """Sentences or pairs were dropped because an operation could not apply to them."""


@dataclass(frozen=True)
class _Source:
    """One source sentence with the spans of its target and cue."""

    sid: int
    word: str
    sentence: str
    string: str
    cue: str
    target: Span
    cue_span: Span


@dataclass(frozen=True)
class _Edit:
    """A rewritten sentence: where its target and cue now are, and what the operation used."""

    sentence: str
    target: Span
    cue: str
    cue_span: Span
    parameter: str
    extra: dict = field(default_factory=dict)


Rewrite = Callable[[_Source], "_Edit | str"]  # an edit, or the reason the operation cannot apply


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


def _safe(text: str) -> str:
    """``text`` as a path-segment-safe slug; a lossy slug gets a digest of the original appended."""
    slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_.+-")
    return slug if slug == text and slug else f"{slug or 'x'}-{_digest(text)}"


def perturbed_name(source: str, label: str) -> str:
    """Name of a perturbed set, ``<source>+<label>``; raises if it is not a safe path segment."""
    name = f"{_safe(source)}+{label}"
    if not _NAME.fullmatch(name):
        raise ValueError(f"perturbed stimuli name {name!r} is not a safe path segment")
    return name


def _words(text: str) -> list[re.Match[str]]:
    return list(_WORD.finditer(text))


def _word_at(runs: list[re.Match[str]], pos: int) -> int:
    """Index of the word run that contains (or first starts after) character ``pos``."""
    for i, m in enumerate(runs):
        if m.end() > pos:
            return i
    return len(runs)


def _offset(sentence: str, target: Span, cue: Span) -> int:
    """Words from the cue to the target (1 = adjacent)."""
    runs = _words(sentence)
    return _word_at(runs, target[0]) - _word_at(runs, cue[1] - 1)


def _adjacent(src: _Source) -> bool:
    gap = src.sentence[src.cue_span[1]:src.target[0]]
    return bool(gap) and gap.isspace()


def _aligns(tokenizer: PreTrainedTokenizerBase, sentence: str, target: str, word: str) -> str | None:
    """None if ``lexprobe.stimuli.align.align`` maps target and ``word`` to tokens, else the reason."""
    from lexprobe.stimuli.align import (
        align,  # imported here: align needs torch, perturbing without a tokenizer does not
    )

    try:
        align(tokenizer, sentence, target, word)
    except StimulusError as err:
        return f"alignment fails ({err})"
    return None


def _check(src: _Source, edit: _Edit, tokenizer: PreTrainedTokenizerBase | None) -> dict[str, Any] | str:
    """Provenance of a valid edit, or the reason it is invalid."""
    s = edit.sentence
    if s == src.sentence:
        return "sentence unchanged"
    found = locate(s, src.string, edit.cue)
    if found != (edit.target, edit.cue_span):
        return f"target {src.string!r} after cue {edit.cue!r} not found where placed in {s!r}"
    k = _offset(src.sentence, src.target, src.cue_span)
    runs = _words(s)
    at = _word_at(runs, edit.target[0]) - k
    if at < 0:
        return f"no word stands {k} word(s) before the target in {s!r}"
    control = runs[at]
    if locate(s, src.string, control.group()) != (edit.target, control.span()):
        return f"position-matched control word {control.group()!r} is not identifiable in {s!r}"
    if tokenizer is not None:
        for word in (edit.cue, control.group()):
            reason = _aligns(tokenizer, s, src.string, word)
            if reason:
                return reason
    return {"source_id": src.sid, "source_sentence": src.sentence, "source_cue": src.cue, "parameter": edit.parameter,
            "cue_offset": _offset(s, edit.target, edit.cue_span), "source_cue_offset": k,
            "control": control.group(), **edit.extra}


def _sources(stimuli: Stimuli) -> list[_Source]:
    out = []
    for r in stimuli.sentences.itertuples(index=False):
        found = locate(r.sentence, r.string, r.cue)
        if found is None:
            raise StimulusError(f"{stimuli.name} sentence_id {r.sentence_id}: no target {r.string!r} after cue "
                                f"{r.cue!r}; build stimuli with lexprobe.stimuli.tables.from_pairs so they are "
                                f"validated")
        out.append(_Source(int(r.sentence_id), r.word, r.sentence, r.string, r.cue, found[0], found[1]))
    return out


def _listing(items: Sequence[str], n: int = 8) -> str:
    return "; ".join(items[:n]) + (f"; ... ({len(items) - n} more)" if len(items) > n else "")


def _apply(stimuli: Stimuli, rewrite: Rewrite, tokenizer: PreTrainedTokenizerBase | None
           ) -> tuple[dict[int, tuple[_Edit, dict[str, Any]]], dict[int, str]]:
    """Rewrite and check every sentence: (kept edits with provenance, dropped reasons) by source sentence id."""
    dropped: dict[int, str] = {}
    kept: dict[int, tuple[_Edit, dict[str, Any]]] = {}
    for src in _sources(stimuli):
        edit = rewrite(src)
        info = edit if isinstance(edit, str) else _check(src, edit, tokenizer)
        if isinstance(info, str):
            dropped[src.sid] = info
        else:
            assert not isinstance(edit, str)  # a rewrite's reason is its own info, dropped above
            kept[src.sid] = (edit, {"word": src.word, "sentence": edit.sentence, **info})
    by_text: dict[tuple[str, str], list[int]] = {}
    for sid, (_, info) in kept.items():
        by_text.setdefault((info["word"], info["sentence"]), []).append(sid)
    for sids in (v for v in by_text.values() if len(v) > 1):
        for sid in sids:
            dropped[sid] = f"becomes the same sentence as sentence_id {[o for o in sids if o != sid]}"
            kept.pop(sid)
    return kept, dropped


def _perturb(stimuli: Stimuli, operation: str, label: str, rewrite: Rewrite,
             tokenizer: PreTrainedTokenizerBase | None) -> Stimuli:
    """Apply ``rewrite`` to every sentence, rebuild the pairs whose sentences both survive, warn once about drops."""
    name = perturbed_name(stimuli.name, label)
    kept, dropped = _apply(stimuli, rewrite, tokenizer)
    rows = []
    for p in stimuli.pairs.itertuples(index=False):
        if p.s1 in kept and p.s2 in kept:
            (e1, _), (e2, _) = kept[p.s1], kept[p.s2]
            row = p._asdict()
            row.update(sentence1=e1.sentence, sentence2=e2.sentence, disambiguating_word1=e1.cue,
                       disambiguating_word2=e2.cue, source_pair_id=p.pair_id)
            rows.append(row)
    reasons = [f"sentence_id {sid}: {why}" for sid, why in sorted(dropped.items())]
    if not rows:
        raise StimulusError(f"{operation} on {stimuli.name!r}: no pair left ({len(dropped)} of "
                            f"{len(stimuli.sentences)} sentences dropped: {_listing(reasons)})")
    used = sorted({sid for p in rows for sid in (p["s1"], p["s2"])})
    orphans = len(kept) - len(used)
    if dropped:
        warnings.warn(
            f"{operation} on {stimuli.name!r}: dropped {len(dropped)} of {len(stimuli.sentences)} sentences, "
            f"{len(stimuli.pairs) - len(rows)} of {len(stimuli.pairs)} pairs with them"
            f"{f' and {orphans} sentence(s) left in no pair' if orphans else ''}: {_listing(reasons)}",
            PerturbationWarning, stacklevel=3)
    info = pd.DataFrame([kept[sid][1] for sid in used]).assign(operation=operation)
    extra = [c for c in info.columns if c not in ["word", "sentence", *PROVENANCE_COLUMNS]]
    return from_pairs(pd.DataFrame(rows).drop(columns=["pair_id", "s1", "s2"]), name,
                      source=f"{name} (from {stimuli.name})",
                      sentence_info=info[["word", "sentence", *PROVENANCE_COLUMNS, *extra]])


def _phrase_slug(phrase: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")
    return slug if slug.replace("_", " ") == phrase and slug else f"{slug or 'p'}-{_digest(phrase)}"


def separate(stimuli: Stimuli, phrase: str, tokenizer: PreTrainedTokenizerBase | None = None) -> Stimuli:
    """Insert ``phrase`` right before each target ("the muddy kind of bank"); label ``separate-<phrase>``."""
    phrase = " ".join(phrase.split())
    n_words = len(_words(phrase))
    if not n_words:
        raise ValueError(f"separate: phrase {phrase!r} has no word")

    def rewrite(src: _Source) -> _Edit:
        t0, t1 = src.target
        shift = len(phrase) + 1
        return _Edit(f"{src.sentence[:t0]}{phrase} {src.sentence[t0:]}", (t0 + shift, t1 + shift), src.cue,
                     src.cue_span, phrase, {"phrase_words": n_words})

    return _perturb(stimuli, "separate", f"separate-{_phrase_slug(phrase)}", rewrite, tokenizer)


def neutral(stimuli: Stimuli, words: Sequence[str] = NEUTRAL_WORDS, seed: int = 0,
            tokenizer: PreTrainedTokenizerBase | None = None) -> Stimuli:
    """Replace each cue that stands right before its target by a neutral modifier ("the old bank").

    A noun's distinct cues get distinct words from ``words``, sampled per noun from ``seed``; a word equal to one
    of the noun's cues is never used. Sentences whose cue is not right before the target are dropped (there is no
    modifier position to fill). Label ``neutral-<digest of words and seed>``.
    """
    words = tuple(words)
    if not words or len(set(words)) != len(words) or not all(re.fullmatch(r"[\w']+", w) for w in words):
        raise ValueError(f"neutral: words must be distinct single words, got {words}")
    cues = stimuli.sentences.groupby("word", sort=False)["cue"].unique()
    choice: dict[tuple[str, str], str] = {}
    short: dict[str, str] = {}
    for noun, noun_cues in cues.items():
        pool = [w for w in words if w.lower() not in {c.lower() for c in noun_cues}]
        if len(pool) < len(noun_cues):
            short[noun] = f"noun {noun!r} has {len(noun_cues)} cues but only {len(pool)} usable neutral words"
            continue
        picked = random.Random(f"{seed}:{noun}").sample(pool, len(noun_cues))
        choice.update({(noun, c): w for c, w in zip(noun_cues, picked)})

    def rewrite(src: _Source) -> _Edit | str:
        if src.word in short:
            return short[src.word]
        if not _adjacent(src):
            return f"cue {src.cue!r} is not right before the target (no modifier position to fill)"
        new = choice[(src.word, src.cue)]
        c0, c1 = src.cue_span
        if src.sentence[c0].isupper():
            new = new[0].upper() + new[1:]
        shift = len(new) - (c1 - c0)
        t0, t1 = src.target
        return _Edit(src.sentence[:c0] + new + src.sentence[c1:], (t0 + shift, t1 + shift), new,
                     (c0, c0 + len(new)), new)

    return _perturb(stimuli, "neutral", f"neutral-{_digest({'words': words, 'seed': seed})}", rewrite, tokenizer)


def _bool(value: str, where: str) -> bool:
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise StimulusError(f"{where}: expected true or false, got {value!r}")
    return text == "true"


def _required(df: pd.DataFrame, columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StimulusError(f"{source}: missing columns {missing}; expected {columns}")


PHRASES, FRAMES = "phrases.csv", "frames.csv"  # the default data files, in data/perturb/


def default_data(name: str) -> Path:
    """One of the default perturbation data files (:data:`PHRASES`, :data:`FRAMES`)."""
    return data_dir() / "perturb" / name


def data_fingerprint() -> str:
    """Hash of the default phrase and frame files: with the stimuli, the tokenizer and this module's code, what
    the standard sets are made from."""
    h = hashlib.sha256()
    for name in (PHRASES, FRAMES):
        h.update(name.encode() + b"\0" + default_data(name).read_bytes())
    return h.hexdigest()[:16]


def load_phrases(path: str | Path | None = None) -> pd.DataFrame:
    """The separating phrases (``data/perturb/phrases.csv`` by default): columns ``phrase``, ``words`` (count),
    ``in_organism_corpus`` (a separator the organism saw in training), ``standard`` (used by :func:`standard_set`)."""
    p = Path(path) if path else default_data(PHRASES)
    df = read_table(p)
    cols = ["phrase", "in_organism_corpus", "standard"]
    _required(df, cols, str(p))
    rows = []
    seen: dict[str, int] = {}
    for i, r in enumerate(df.itertuples(index=False), start=1):
        where = f"{p} row {i}"
        phrase = " ".join(r.phrase.split())
        if not _words(phrase):
            raise StimulusError(f"{where}: phrase {r.phrase!r} has no word")
        if phrase in seen:
            raise StimulusError(f"{where}: phrase {phrase!r} repeats row {seen[phrase]}")
        seen[phrase] = i
        rows.append({"phrase": phrase, "words": len(_words(phrase)),
                     "in_organism_corpus": _bool(r.in_organism_corpus, f"{where} in_organism_corpus"),
                     "standard": _bool(r.standard, f"{where} standard")})
    return pd.DataFrame(rows)


def _fields(template: str) -> list[tuple[str, str | None, str | None]]:
    """The placeholders of a template as (name, format spec, conversion); raises ValueError on bad braces."""
    return [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]


def _template_error(template: str) -> str | None:
    """Why a frame template is malformed, or None."""
    try:
        fields = _fields(template)
    except ValueError as err:
        return f"has unbalanced braces ({err}); write literal braces as {{{{ and }}}}"
    bad = [f for f, spec, conv in fields if f not in TEMPLATE_FIELDS or spec or conv]
    if bad:
        return f"has placeholder(s) {bad} other than plain {{cue}}, {{frame}}, {{noun}}"
    names = [f for f, _, _ in fields]
    if names.count("cue") != 1:
        return "needs {cue} exactly once"
    slots = [f for f in names if f != "cue"]
    if len(slots) != 1:
        return "needs exactly one of {frame} (the source sentence without its cue) or {noun} (the target)"
    if names.index("cue") > names.index(slots[0]):
        return f"has {{cue}} after {{{slots[0]}}}; the cue must come first (a causal model reads it before the target)"
    return None


def load_templates(source: str | Path | pd.DataFrame | None = None) -> pd.DataFrame:
    """Frame templates (``data/perturb/frames.csv`` by default, or a table): columns ``word``, ``cue``,
    ``template``; errors name the file and 1-based data row (CSV line = row + 1)."""
    if isinstance(source, pd.DataFrame):
        df, where = source.astype(str), "<templates table>"
    else:
        p = Path(source) if source else default_data(FRAMES)
        df, where = read_table(p), str(p)
    _required(df, ["word", "cue", "template"], where)
    seen: dict[tuple[str, str], int] = {}
    for i, r in enumerate(df.itertuples(index=False), start=1):
        row = f"{where} row {i} (word {r.word!r}, cue {r.cue!r})"
        if not (r.word.strip() and r.cue.strip() and r.template.strip()):
            raise StimulusError(f"{row}: word, cue and template must all be non-empty")
        problem = _template_error(r.template)
        if problem:
            raise StimulusError(f"{row}: template {r.template!r} {problem}")
        key = (r.word.strip(), r.cue.strip())
        if key in seen:
            raise StimulusError(f"{row}: repeats row {seen[key]} (same word and cue)")
        seen[key] = i
    out = df[["word", "cue", "template"]].apply(lambda c: c.str.strip())
    out.attrs["source"] = where
    return out


def _lower_first(text: str) -> str:
    first = _WORD.match(text)
    if first and (first.group() == "I" or first.group().startswith("I'")):
        return text
    return text[:1].lower() + text[1:]


def frame(stimuli: Stimuli, templates: str | Path | pd.DataFrame | None = None,
          tokenizer: PreTrainedTokenizerBase | None = None) -> Stimuli:
    """Move each cue out of modifier position with a template for its (word, cue).

    ``{frame}`` is the source sentence without its cue (first letter lowercased unless it starts with "I"); it
    needs the cue right before the target. ``{noun}`` is the target string, for templates written as whole
    sentences (e.g. for RAW-C's "She wore a band.", "She {cue} it and then saw the {noun}."). Text may follow
    ``{cue}`` inside a word ("{cue}s"). The sentence's first letter is capitalised. Label
    ``frame-<digest of the templates used>``.
    Raises if the templates cover none of the set's (word, cue) pairs; partly covered sets drop the rest with
    the counted warning.
    """
    table = load_templates(templates)
    lookup = {(w, c): t for w, c, t in table.itertuples(index=False)}
    needed = stimuli.sentences[["word", "cue"]].drop_duplicates()
    keys = list(zip(needed["word"], needed["cue"]))
    missing = [k for k in keys if k not in lookup]
    if len(missing) == len(keys):
        raise StimulusError(
            f"frame: the templates in {table.attrs['source']} cover none of the {len(keys)} (word, cue) pairs of "
            f"stimuli {stimuli.name!r}; add rows word,cue,template (template with {{cue}} and {{frame}} or "
            f"{{noun}}) for: {_listing([f'{w}/{c}' for w, c in missing], 12)}")

    def rewrite(src: _Source) -> _Edit | str:
        template = lookup.get((src.word, src.cue))
        if template is None:
            return f"no frame template for word {src.word!r} with cue {src.cue!r}"
        (c0, _), (t0, t1) = src.cue_span, src.target
        if any(f == "frame" for f, _, _ in _fields(template)):
            if not _adjacent(src):
                return f"cue {src.cue!r} is not right before the target: a {{frame}} template needs that; " \
                       "write a {noun} template for this sentence"
            rest = _lower_first(src.sentence[:c0] + src.sentence[t0:])
            text, spans = fill(template, cue=src.cue, frame=rest)
            start = spans["frame"][0] + c0
        else:
            text, spans = fill(template, cue=src.cue, noun=src.sentence[t0:t1])
            start = spans["noun"][0]
        if text[:1].upper() != text[:1] and len(text[:1].upper()) == 1:
            text = text[0].upper() + text[1:]
        cue_start = spans["cue"][0]
        tail = re.match(r"\w*", text[spans["cue"][1]:])
        assert tail is not None  # \w* matches, if only the empty string
        return _Edit(text, (start, start + t1 - t0), src.cue, (cue_start, spans["cue"][1] + tail.end()), template)

    used = sorted({k: lookup[k] for k in keys if k in lookup}.items())
    return _perturb(stimuli, "frame", f"frame-{_digest(used)}", rewrite, tokenizer)


def standard_set(stimuli: Stimuli, tokenizer: PreTrainedTokenizerBase | None = None, phrases: str | Path | None = None,
                 templates: str | Path | pd.DataFrame | None = None) -> dict[str, Stimuli]:
    """The default perturbations of stage 3, keyed ``separate-<phrase>`` (each phrase marked ``standard`` in the
    phrases file), ``neutral`` and ``frame``; the intact set is not included. An operation that cannot apply to
    the set at all is left out with a :class:`PerturbationWarning` saying why."""
    makers: dict[str, Callable[[], Stimuli]] = {
        f"separate-{_phrase_slug(ph)}": partial(separate, stimuli, ph, tokenizer)
        for ph in load_phrases(phrases).query("standard")["phrase"]
    }
    makers["neutral"] = lambda: neutral(stimuli, tokenizer=tokenizer)
    makers["frame"] = lambda: frame(stimuli, templates, tokenizer)
    out = {}
    for key, make in makers.items():
        try:
            out[key] = make()
        except StimulusError as err:
            warnings.warn(f"standard_set: left out {key!r}: {err}", PerturbationWarning, stacklevel=2)
    return out


def position_control(sentences: pd.DataFrame) -> pd.DataFrame:
    """The sentence table with ``cue`` replaced by ``control`` (unchanged when there is no ``control`` column,
    as in an intact set, where the cue is its own control)."""
    if "control" not in sentences.columns:
        return sentences.copy()
    return sentences.assign(cue=sentences["control"])


def cue_token_distance(stimuli: Stimuli, tokenizer: PreTrainedTokenizerBase) -> pd.Series:
    """Per ``sentence_id``: first target token index minus last cue token index (1 = adjacent tokens)."""
    from lexprobe.stimuli.align import align  # needs torch; only callers with a tokenizer pay for it

    dist = {}
    for r in stimuli.sentences.itertuples(index=False):
        _, t_idx, c_idx, _ = align(tokenizer, r.sentence, r.string, r.cue)
        dist[r.sentence_id] = min(t_idx) - max(c_idx)
    return pd.Series(dist, name="cue_token_distance").rename_axis("sentence_id")
