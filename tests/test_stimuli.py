"""Stimulus loading, validation errors, pair -> sentence conversion, hashing."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest

from lexprobe.stimuli.tables import PAIR_COLUMNS, StimulusError, load_rawc, load_stimuli, locate

GOOD = [
    ["bank", "She saw the muddy bank.", "She saw the grassy bank.", "TRUE", "Homonymy",
     "muddy", "grassy", "N", "4.2", "bank"],
    ["bank", "She saw the muddy bank.", "She saw the savings bank.", "FALSE", "Homonymy",
     "muddy", "savings", "N", "1.1", "bank"],
    ["bank", "She saw the grassy bank.", "She saw the savings bank.", "FALSE", "Homonymy",
     "grassy", "savings", "N", "", "bank"],
    ["bat", "He held the wooden bat.", "He held the furry bat.", "FALSE", "Homonymy",
     "wooden", "furry", "N", "1.0", "bat"],
]


def write(tmp_path: Path, rows: list[list[str]], header: list[str] = PAIR_COLUMNS, name: str = "s.csv") -> Path:
    p = tmp_path / name
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return p


def test_load_good_table(tmp_path):
    st = load_rawc(write(tmp_path, GOOD))
    assert len(st.pairs) == 4
    assert len(st.sentences) == 5
    bank = st.sentences[st.sentences.word == "bank"].set_index("cue")["sense"]
    assert bank["muddy"] == bank["grassy"] != bank["savings"]
    assert list(st.pairs["same"]) == [True, False, False, False]
    assert st.pairs["mean_relatedness"].isna().sum() == 1


def test_hash_ignores_formatting_but_not_content(tmp_path):
    a = load_rawc(write(tmp_path, GOOD, name="a.csv"))
    p = write(tmp_path, GOOD, name="b.csv")
    p.write_text(p.read_text().replace("\n", "\r\n"))
    b = load_rawc(p)
    changed = [r[:] for r in GOOD]
    changed[0][8] = "4.3"
    c = load_rawc(write(tmp_path, changed, name="c.csv"))
    assert a.hash == b.hash != c.hash


def test_missing_column_named(tmp_path):
    header = [c for c in PAIR_COLUMNS if c != "disambiguating_word2"]
    rows = [r[:6] + r[7:] for r in GOOD]
    with pytest.raises(StimulusError, match="missing columns.*disambiguating_word2"):
        load_rawc(write(tmp_path, rows, header))


def test_empty_file(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("")
    with pytest.raises(StimulusError, match="empty"):
        load_rawc(p)
    with pytest.raises(StimulusError, match="header only"):
        load_rawc(write(tmp_path, [], name="h.csv"))


def test_non_utf8_names_line(tmp_path):
    p = write(tmp_path, GOOD)
    p.write_bytes(p.read_bytes().replace(b"furry", "f\u00fcrry".encode("latin-1")))
    with pytest.raises(StimulusError, match=r"not UTF-8 .*line 5"):
        load_rawc(p)


def test_target_absent_names_row(tmp_path):
    rows = [r[:] for r in GOOD]
    rows[2][2] = "She saw the savings account."
    with pytest.raises(StimulusError, match=r"row 3 .*target string 'bank' not found in sentence2"):
        load_rawc(write(tmp_path, rows))


def test_cue_absent_names_row(tmp_path):
    rows = [r[:] for r in GOOD]
    rows[3][6] = "scaly"
    with pytest.raises(StimulusError, match=r"row 4 .*cue 'scaly' not found in sentence2"):
        load_rawc(write(tmp_path, rows))


def test_duplicate_row(tmp_path):
    rows = GOOD + [GOOD[1][:2] + [GOOD[1][2]] + GOOD[1][3:]]
    rows[-1][1], rows[-1][2] = GOOD[1][2], GOOD[1][1]  # same pair, swapped order
    with pytest.raises(StimulusError, match="row 5 .*duplicate of row 2"):
        load_rawc(write(tmp_path, rows))


def test_bad_same_value(tmp_path):
    rows = [r[:] for r in GOOD]
    rows[0][3] = "maybe"
    with pytest.raises(StimulusError, match="row 1 .*'same' must be TRUE/FALSE"):
        load_rawc(write(tmp_path, rows))


def test_cue_after_target_excluded_with_counted_warning(tmp_path):
    rows = [r[:] for r in GOOD]
    rows.append(["bat", "The bat was wooden.", "The bat was furry.", "FALSE", "Homonymy",
                 "wooden", "furry", "N", "", "bat"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = load_rawc(write(tmp_path, rows))
    assert len(st.pairs) == 4
    assert any("excluded 1 pair" in str(w.message) and "[5]" in str(w.message) for w in caught)


def test_url_offline_message(tmp_path):
    with pytest.raises(StimulusError, match="does not download"):
        load_rawc("https://example.org/rawc.csv")


def test_nouns_only_filter(tmp_path):
    rows = [r[:] for r in GOOD] + [["broke", "She broke the glass.", "She broke the news.", "FALSE", "Polysemy",
                                    "glass", "news", "V", "", "broke"]]
    st = load_rawc(write(tmp_path, rows))
    assert set(st.pairs["word"]) == {"bank", "bat"}


def span(sentence: str, word: str, start: int = 0) -> tuple[int, int]:
    i = sentence.index(word, start)
    return i, i + len(word)


@pytest.mark.parametrize(
    "sentence,target,cue,t_from,c_word",
    [
        ("The bank near the muddy bank.", "bank", "muddy", 10, "muddy"),  # repeated target: the one after the cue
        ("She marinated the lamb.", "lamb", "marinate", 0, "marinated"),  # inflected cue
        ("The banks, muddy banks!", "banks", "muddy", 10, "muddy"),  # punctuation
        ("Banking on the bank.", "bank", "on", 0, "on"),  # 'Bank' inside 'Banking' is no word match
    ],
)
def test_locate(sentence, target, cue, t_from, c_word):
    assert locate(sentence, target, cue) == (span(sentence, target, t_from), span(sentence, c_word))


def test_locate_cue_after_target():
    assert locate("The bank was muddy.", "bank", "muddy") is None


def test_shipped_set_meets_spec(stimuli):
    pairs, sents = stimuli.pairs, stimuli.sentences
    assert pairs["word"].nunique() >= 40
    assert set(pairs["ambiguity_type"]) == {"Homonymy", "Polysemy"}
    per_word = pairs.groupby("word").size()
    assert (per_word == 6).all()
    assert (sents.groupby("word")["sense"].nunique() == 2).all()
    assert (sents.groupby(["word", "sense"]).size() == 2).all()
    assert pairs["mean_relatedness"].isna().all()
    assert load_stimuli().hash == stimuli.hash


def test_errors_keep_file_rows_after_class_filter(tmp_path):
    verb = ["broke", "She broke the glass.", "She broke the news.", "FALSE", "Polysemy", "glass", "news", "V", "",
            "broke"]
    rows = [verb, verb[:], [r[:] for r in GOOD][0], [r[:] for r in GOOD][1]]
    rows[1][1] = "He broke the vase."
    rows[3][3] = "sometimes"
    with pytest.raises(StimulusError, match="row 4 "):
        load_rawc(write(tmp_path, rows))


def test_malformed_csv_names_file(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text('word,sentence1\n"unterminated,quote\n')
    with pytest.raises(StimulusError, match="bad.csv"):
        load_rawc(p)
