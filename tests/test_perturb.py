"""Perturbed stimulus sets: each operation on the shipped and a RAW-C-like set, provenance, drops, templates."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from lexprobe.organism.profiles import PROFILES
from lexprobe.stimuli import perturb as P
from lexprobe.stimuli.align import encode
from lexprobe.stimuli.tables import (
    PAIR_COLUMNS,
    SENTENCE_COLUMNS,
    StimulusError,
    attach_sentence_info,
    find_word,
    from_pairs,
)

# RAW-C-like: cues are verbs or modifiers, some not right before the target; one noun repeats a cue in two frames.
RAWC = [
    ["crane", "She fed a crane.", "She operated a crane.", "FALSE", "Homonymy", "fed", "operated", "N", "1.5", "crane"],
    ["crane", "She fed a crane.", "He photographed the whooping crane.", "TRUE", "Homonymy", "fed", "whooping", "N",
     "4.1", "crane"],
    ["crane", "She operated a crane.", "It was a construction crane.", "TRUE", "Homonymy", "operated", "construction",
     "N", "4.4", "crane"],
    ["pitch", "I walked onto the muddy pitch.", "We played on the muddy pitch.", "TRUE", "Homonymy", "muddy", "muddy",
     "N", "4.8", "pitch"],
    ["pitch", "I walked onto the muddy pitch.", "She heard the high pitch.", "FALSE", "Homonymy", "muddy", "high", "N",
     "1.2", "pitch"],
]


@pytest.fixture(scope="module")
def rawc():
    return from_pairs(pd.DataFrame(RAWC, columns=PAIR_COLUMNS), name="rawc")


@pytest.fixture(scope="module")
def standard(stimuli):
    with warnings.catch_warnings():
        warnings.simplefilter("error", P.PerturbationWarning)  # the shipped set perturbs without a single drop
        return P.standard_set(stimuli)


def strict(fn, *args, **kw):
    """Run an operation that must not drop anything."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", P.PerturbationWarning)
        return fn(*args, **kw)


def one_warning(fn, *args, **kw):
    """Run an operation that must drop something; return (result, the one warning's text)."""
    with pytest.warns(P.PerturbationWarning) as rec:
        out = fn(*args, **kw)
    assert len(rec) == 1, [str(r.message) for r in rec]
    return out, str(rec[0].message)


def check_consistent(per, source):
    """Pairs point at existing sentences, provenance points back at the source, pair labels are kept."""
    sents = per.sentences.set_index("sentence_id")
    assert list(per.sentences.columns[: len(SENTENCE_COLUMNS)]) == SENTENCE_COLUMNS
    assert set(P.PROVENANCE_COLUMNS) <= set(per.sentences.columns)
    assert set(per.pairs["s1"]) | set(per.pairs["s2"]) == set(sents.index)
    src = source.sentences.set_index("sentence_id")
    assert (src.loc[per.sentences["source_id"], "sentence"].to_numpy() == per.sentences["source_sentence"]).all()
    assert (src.loc[per.sentences["source_id"], "cue"].to_numpy() == per.sentences["source_cue"]).all()
    old = source.pairs.set_index("pair_id").loc[per.pairs["source_pair_id"]]
    assert (old["same"].to_numpy() == per.pairs["same"].to_numpy()).all()
    for p in per.pairs.itertuples():
        for s, n in ((p.s1, 1), (p.s2, 2)):
            assert sents.loc[s, "source_id"] == old.loc[p.source_pair_id, f"s{n}"]
    assert per.hash != source.hash
    assert P._NAME.fullmatch(per.name) and per.name.startswith(f"{source.name}+")


def test_separate_shipped(stimuli, standard):
    per = standard["separate-kind_of"]
    check_consistent(per, stimuli)
    assert per.name == "lexprobe_nouns+separate-kind_of"
    assert len(per.pairs) == len(stimuli.pairs) and len(per.sentences) == len(stimuli.sentences)
    row = per.sentences.iloc[0]
    assert row["sentence"] == "We talked about the muddy kind of bank."
    assert (row["cue"], row["control"], row["parameter"], row["phrase_words"]) == ("muddy", "of", "kind of", 2)
    assert (per.sentences["cue_offset"] == 3).all() and (per.sentences["source_cue_offset"] == 1).all()
    assert (per.sentences["cue"] == per.sentences["source_cue"]).all()
    src_sense = stimuli.sentences.set_index("sentence_id").loc[per.sentences["source_id"], "sense"].to_numpy()
    assert (src_sense == per.sentences["sense"].to_numpy()).all()


@pytest.mark.parametrize("phrase,words", [("old", 1), ("very old", 2), ("and very old", 3)])
def test_separate_lengths(standard, phrase, words):
    per = standard[f"separate-{phrase.replace(' ', '_')}"]
    assert (per.sentences["phrase_words"] == words).all()
    assert (per.sentences["cue_offset"] == words + 1).all()
    assert (per.sentences["control"] == phrase.split()[-1]).all()


def test_neutral_shipped(stimuli, standard):
    per = standard["neutral"]
    check_consistent(per, stimuli)
    s = per.sentences
    assert s["cue"].isin(P.NEUTRAL_WORDS).all() and (s["cue"] == s["control"]).all() and (s["cue_offset"] == 1).all()
    assert not (s["cue"] == s["source_cue"]).any()
    for _, g in s.groupby("word"):  # distinct neutral word per cue: sentences stay distinct
        assert g["cue"].nunique() == g["source_cue"].nunique() == len(g)
    expected = [src.replace(f" {c} ", f" {n} ") for src, c, n in zip(s["source_sentence"], s["source_cue"], s["cue"])]
    assert list(s["sentence"]) == expected
    again = strict(P.neutral, stimuli)
    other = strict(P.neutral, stimuli, seed=1)
    assert again.name == per.name and again.hash == per.hash
    assert other.name != per.name and other.hash != per.hash


def test_frame_covers_every_shipped_noun(stimuli):
    table = P.load_templates()
    have = set(zip(table["word"], table["cue"]))
    need = set(zip(stimuli.sentences["word"], stimuli.sentences["cue"]))
    assert need <= have, sorted(need - have)
    assert set(stimuli.sentences["word"]) <= set(table["word"])


def test_frame_shipped(stimuli, standard):
    per = standard["frame"]
    check_consistent(per, stimuli)
    assert len(per.sentences) == len(stimuli.sentences)
    s = per.sentences
    assert (s["cue"] == s["source_cue"]).all() and (s["control"] == "the").all() and (s["cue_offset"] > 2).all()
    for sent, cue, target in zip(s["sentence"], s["cue"], s["string"]):
        (c0, _), (t0, _) = find_word(sent, cue, inflected=True)[0], find_word(sent, target)[0]
        assert c0 < t0 and sent[0].isupper()
    row = s[s["source_sentence"] == "He pointed at the vampire bat."].iloc[0]
    assert row["sentence"] == "He had read about vampires, and he pointed at the bat."  # inflected cue
    assert s[s["word"] == "scale"]["sentence"].str.contains(", and I was curious").all()  # "I" keeps its capital


def test_standard_set_names_and_hashes(stimuli, standard):
    assert set(standard) == {"separate-kind_of", "separate-old", "separate-very_old", "separate-and_very_old",
                             "neutral", "frame"}
    hashes = {s.hash for s in standard.values()} | {stimuli.hash}
    names = {s.name for s in standard.values()}
    assert len(hashes) == len(standard) + 1 and len(names) == len(standard)
    assert {s.sentences["operation"].iloc[0] for s in standard.values()} == set(P.OPERATIONS)


def test_phrases_file_matches_organism():
    ph = P.load_phrases()
    seen = set(ph.loc[ph["in_organism_corpus"], "phrase"])
    assert seen == set(PROFILES["default"].corpus.separators) == set(PROFILES["smoke"].corpus.separators)
    std = ph[ph["standard"]]
    assert std["in_organism_corpus"].any()
    assert sorted(std.loc[~std["in_organism_corpus"], "words"]) == [1, 2, 3]


def test_round_trip_encode(stimuli, standard, tokenizer):
    base = encode(tokenizer, stimuli.sentences)
    intact = P.cue_token_distance(stimuli, tokenizer)
    assert (intact >= 1).all()  # 1 unless the tokenizer gives the space before the target a token of its own
    for key, per in standard.items():
        enc = encode(tokenizer, per.sentences)
        ctl = encode(tokenizer, P.position_control(per.sentences))
        assert (enc.input_ids == ctl.input_ids).all() and enc.target_mask.equal(ctl.target_mask)
        assert not (ctl.cue_mask & enc.target_mask).any()
        for i, r in enumerate(per.sentences.itertuples()):
            toks = enc.input_ids[i][ctl.cue_mask[i]].tolist()
            assert tokenizer.decode(toks).strip() == r.control, key
        dist = P.cue_token_distance(per, tokenizer)
        if key.startswith("separate") or key == "frame":
            assert (dist.to_numpy() > intact.loc[per.sentences["source_id"]].to_numpy()).all(), key
        else:
            assert (dist.to_numpy() >= 1).all()
    assert P.position_control(stimuli.sentences).equals(stimuli.sentences)  # intact: the cue is its own control
    assert base.cue_mask.any(1).all()


def test_tokenizer_checked_per_sentence(rawc, tokenizer):
    per = strict(P.separate, rawc, "kind of", tokenizer=tokenizer)
    assert len(per.sentences) == len(rawc.sentences)

    class Blind:
        """A tokenizer whose offsets cover nothing in sentences mentioning 'kind'."""

        def __call__(self, text, **kw):
            enc = tokenizer(text, **kw)
            if "kind" in text:
                enc["offset_mapping"] = [(0, 0)] * len(enc["input_ids"])
            return enc

        def convert_ids_to_tokens(self, ids):
            return tokenizer.convert_ids_to_tokens(ids)

    with pytest.raises(StimulusError, match="no pair left.*alignment fails"):
        P.separate(rawc, "kind of", tokenizer=Blind())
    strict(P.separate, rawc, "sort of", tokenizer=Blind())


def test_separate_rawc(rawc):
    per = strict(P.separate, rawc, "kind of")
    check_consistent(per, rawc)
    row = per.sentences.set_index("source_sentence").loc["She fed a crane."]
    assert row["sentence"] == "She fed a kind of crane."
    # the cue stood two words before the target; now "kind" does
    assert (row["source_cue_offset"], row["cue_offset"], row["control"]) == (2, 4, "kind")


def test_neutral_rawc_drops_non_modifier_cues(rawc):
    per, msg = one_warning(P.neutral, rawc)
    check_consistent(per, rawc)
    assert "dropped 2 of 7 sentences, 3 of 5 pairs with them and 2 sentence(s) left in no pair" in msg
    assert "'fed' is not right before" in msg and "'operated' is not right before" in msg
    assert set(per.sentences["source_cue"]) == {"muddy", "high"}
    assert len(per.pairs) == 2


def test_neutral_pool_too_small(rawc):
    with pytest.raises(StimulusError, match="no pair left.*noun 'pitch' has 2 cues but only 1 usable"):
        P.neutral(rawc, words=("old", "muddy"))


def test_frame_rawc_without_templates_names_missing(rawc):
    with pytest.raises(StimulusError, match=r"cover none of the 6 \(word, cue\).*crane/fed.*pitch/high"):
        P.frame(rawc)
    with pytest.warns(P.PerturbationWarning) as rec:
        sets = P.standard_set(rawc)
    assert set(sets) == {"separate-kind_of", "separate-old", "separate-very_old", "separate-and_very_old", "neutral"}
    msgs = [str(r.message) for r in rec]
    assert len(msgs) == 2 and msgs[0].startswith("neutral on 'rawc': dropped 2 of 7 sentences")
    assert msgs[1].startswith("standard_set: left out 'frame'") and "crane/fed" in msgs[1]


def test_frame_rawc_with_user_templates(rawc, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("word,cue,template\n"
                    "crane,fed,She {cue} it and then saw the {noun}.\n"
                    "crane,operated,He {cue} machines like the {noun}.\n"
                    "crane,whooping,It was {cue} and I watched the {noun}.\n"
                    "pitch,muddy,\"It was {cue}, and {frame}\"\n"
                    "pitch,high,\"Someone sang {cue}, and {frame}\"\n")
    per, msg = one_warning(P.frame, rawc, path)
    assert "no frame template for word 'crane' with cue 'construction'" in msg
    # both "muddy" sentences share a cue; their {frame} fillings differ, so both stay ("I" keeps its capital)
    got = dict(zip(per.sentences["source_sentence"], per.sentences["sentence"]))
    assert got["She fed a crane."] == "She fed it and then saw the crane."
    assert got["We played on the muddy pitch."] == "It was muddy, and we played on the pitch."
    assert got["I walked onto the muddy pitch."] == "It was muddy, and I walked onto the pitch."
    row = per.sentences.set_index("source_sentence").loc["She fed a crane."]
    assert (row["control"], row["source_cue_offset"]) == ("saw", 2)  # the cue stood 2 words before the target
    check_consistent(per, rawc)


def test_frame_collision_and_frame_slot_needs_adjacent_cue(rawc, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("word,cue,template\n"
                    "pitch,muddy,It was {cue} where I saw the {noun}.\n"  # both muddy sentences -> the same text
                    "pitch,high,\"Someone sang {cue}, and {frame}\"\n"
                    "crane,fed,\"It {cue} off, and {frame}\"\n"  # 'fed' is not right before 'crane'
                    "crane,operated,He {cue} it like a {noun}.\n"
                    "crane,whooping,It was {cue} and I held the {noun}.\n"
                    "crane,construction,They liked {cue} and the {noun}.\n")
    per, msg = one_warning(P.frame, rawc, path)
    assert "dropped 3 of 7 sentences, 4 of 5 pairs" in msg and "becomes the same sentence as sentence_id" in msg
    assert "'fed' is not right before the target: a {frame} template needs that" in msg
    assert set(per.sentences["source_cue"]) == {"operated", "construction"}
    check_consistent(per, rawc)


@pytest.mark.parametrize("template,problem", [
    ("It was muddy, and {frame}", r"needs \{cue\} exactly once"),
    ("{frame} and it was {cue}", r"has \{cue\} after \{frame\}"),
    ("It was {cue}, and {sentence}", r"placeholder\(s\) \['sentence'\] other than"),
    ("It was {cue}, and {frame", "unbalanced braces"),
    ("It was {cue}", r"exactly one of \{frame\}"),
    ("It was {cue!r}, and {frame}", r"placeholder\(s\) \['cue'\] other than plain"),
])
def test_bad_template_names_row(tmp_path, template, problem):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"word": ["bank", "bat"], "cue": ["grassy", "muddy"],
                  "template": ["It was {cue}, and {frame}", template]}).to_csv(path, index=False)
    with pytest.raises(StimulusError, match=rf"bad.csv row 2 \(word 'bat', cue 'muddy'\): template .*{problem}"):
        P.load_templates(path)


@pytest.mark.parametrize("loader,text,problem", [
    (P.load_templates, 'word,cue,template\nbank,muddy,"{cue}, {frame}"\nbank,muddy,"{cue}; {frame}"\n',
     " row 2 .*repeats row 1"),
    (P.load_templates, "word,template\nbank,{cue} {frame}\n", r": missing columns \['cue'\]"),
    (P.load_templates, "word,cue,template\nbank, ,{cue} {frame}\n", " row 1 .*must all be non-empty"),
    (P.load_phrases, "phrase,in_organism_corpus,standard\nkind of,true,true\nkind  of,false,false\n",
     " row 2: phrase 'kind of' repeats row 1"),
    (P.load_phrases, "phrase,in_organism_corpus,standard\nkind of,yes,true\n",
     " row 1 in_organism_corpus: expected true or false"),
    (P.load_phrases, "phrase,in_organism_corpus,standard\n- -,true,true\n", " row 1: phrase .* has no word"),
    (P.load_phrases, "phrase,standard\nkind of,true\n", r": missing columns \['in_organism_corpus'\]"),
])
def test_bad_file_names_row(tmp_path, loader, text, problem):
    path = tmp_path / "f.csv"
    path.write_text(text)
    with pytest.raises(StimulusError, match=f"f.csv{problem}"):
        loader(path)


def test_bad_operation_arguments(rawc):
    with pytest.raises(ValueError, match="has no word"):
        P.separate(rawc, " , ")
    with pytest.raises(ValueError, match="distinct single words"):
        P.neutral(rawc, words=("old", "old"))
    with pytest.raises(ValueError, match="distinct single words"):
        P.neutral(rawc, words=("very old",))


def test_names_are_safe_and_parameter_derived(rawc):
    odd = from_pairs(rawc.pairs.drop(columns=["pair_id", "s1", "s2"]), name="my set/v1")
    per = strict(P.separate, odd, "kind, of")
    assert P._NAME.fullmatch(per.name) and "/" not in per.name and " " not in per.name
    assert per.name != strict(P.separate, odd, "kind of").name
    assert strict(P.separate, rawc, "kind of").name == "rawc+separate-kind_of"


def test_subset_keeps_provenance(standard):
    per = standard["separate-kind_of"]
    sub = per.subset(["bank", "bat"])
    assert list(sub.sentences.columns) == list(per.sentences.columns)
    assert set(sub.sentences["word"]) == {"bank", "bat"} and (sub.sentences["operation"] == "separate").all()
    assert "source_pair_id" in sub.pairs.columns


def test_chained_perturbation(rawc):
    twice = strict(P.separate, strict(P.separate, rawc, "kind of"), "very")
    assert twice.name == "rawc+separate-kind_of+separate-very"
    assert "She fed a kind of very crane." in set(twice.sentences["sentence"])


def test_sentence_info_errors(rawc):
    info = rawc.sentences[["word", "sentence"]].assign(note="x")
    assert list(attach_sentence_info(rawc.sentences, info).columns) == SENTENCE_COLUMNS + ["note"]
    with pytest.raises(StimulusError, match=r"src: extra sentence columns \['cue'\] would shadow"):
        attach_sentence_info(rawc.sentences, info.assign(cue="y"), "src")
    with pytest.raises(StimulusError, match=r"src: no sentence info for sentence_id \[0\]"):
        attach_sentence_info(rawc.sentences, info.iloc[1:], "src")
    with pytest.raises(StimulusError, match="src: sentence info has several rows for 'She fed a crane.'"):
        attach_sentence_info(rawc.sentences, pd.concat([info, info.iloc[:1]]), "src")
