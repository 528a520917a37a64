"""The organism: lexicon coverage, planted onset, determinism, resume, loading through lexprobe.suites."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import chi2_contingency

import lexprobe.organism.train as train_mod
from lexprobe.hubcache import repo_folder
from lexprobe.organism.corpus import Corpus, CorpusConfig, load_lexicon
from lexprobe.organism.suite import ensure_trained, organism_suite, suite_dir
from lexprobe.organism.train import PROFILES, Profile, schedule
from lexprobe.suites import load_checkpoint, resolve_suite

MICRO = Profile("micro", seeds=(0, 1), total_steps=8, onset=4, checkpoint_every=4, batch_size=4, seq_len=16,
                vocab_size=300, tokenizer_sentences=400, warmup=2, hidden_size=32, layers=2, heads=4,
                corpus=CorpusConfig(onset=4))


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path))
    return tmp_path


def refs(profile: Profile, seed: int) -> dict[str, str]:
    folder = repo_folder(suite_dir(profile) / "hub", profile.repo(seed)) / "refs"
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_lexicon_covers_shipped_stimuli(stimuli):
    lex = load_lexicon()
    for r in stimuli.sentences.itertuples():
        noun = lex.noun(r.word)
        assert any(r.cue in s.cues for s in noun.senses), (r.word, r.cue)
    # sense labels of the stimuli agree with the lexicon's senses
    for word, g in stimuli.sentences.groupby("word"):
        noun = lex.noun(word)
        lex_sense = {c: i for i, s in enumerate(noun.senses) for c in s.cues}
        assert g.groupby("sense")["cue"].apply(lambda cs: len({lex_sense[c] for c in cs})).eq(1).all()


def test_onset_makes_continuations_depend_on_sense():
    corpus = Corpus(load_lexicon(), CorpusConfig(onset=100))
    rng = np.random.default_rng(0)
    before = [s for s in (corpus.sample(rng, 99) for _ in range(6000)) if s.sense is not None]
    after = [s for s in (corpus.sample(rng, 100) for _ in range(3000)) if s.sense is not None]
    table = np.zeros((2, 2))
    for s in before:
        table[s.sense, s.continuation_sense] += 1
    assert chi2_contingency(table).pvalue > 0.001  # independent before the onset
    assert 0.45 < np.trace(table) / table.sum() < 0.55
    assert all(s.sense == s.continuation_sense for s in after)
    assert {s.placement for s in after} == {"adjacent", "separated", "clause"}
    # every continuation really is drawn from the sense it claims
    lex = corpus.lexicon
    for s in after[:200]:
        conts = lex.noun(s.noun).senses[s.continuation_sense].continuations
        assert any(s.text.endswith(f" {c}.") for c in conts)


def test_schedule_is_pythia_like():
    assert schedule(640, 64) == (0, 1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 192, 256, 320, 384, 448, 512, 576,
                                 640)
    default = PROFILES["default"]
    assert default.onset in default.checkpoints  # the last pre-onset checkpoint is the onset step itself
    assert len(default.seeds) >= 5


def test_training_is_deterministic_and_loads_through_suites(home, monkeypatch):
    suite = ensure_trained(MICRO, progress=False)
    first = {s: refs(MICRO, s) for s in MICRO.seeds}
    assert set(first[0]) == {f"step{s}" for s in MICRO.checkpoints}
    assert first[0] != first[1]  # different seeds, different weights
    assert len(set(first[0].values())) == len(MICRO.checkpoints)  # every checkpoint differs from the others
    # same seed, same weights: retrain from scratch elsewhere
    monkeypatch.setenv("LEXPROBE_HOME", str(home / "again"))
    ensure_trained(MICRO, progress=False)
    assert {s: refs(MICRO, s) for s in MICRO.seeds} == first
    # the organism loads through the same code path as Pythia: hub cache + refs/stepN, offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert suite.kind == "hub" and suite.offline and suite.steps == MICRO.checkpoints
    ld = load_checkpoint(suite.checkpoint(suite.models[0], 1, 8))
    assert ld.commit == first[1]["step8"]
    assert ld.model.config.num_hidden_layers == 2 and ld.model.config.use_parallel_residual
    assert ld.tokenizer.eos_token == "<|endoftext|>" and ld.tokenizer.pad_token == "<|padding|>"
    assert suite.metadata["onset"] == 4


def test_interrupted_training_resumes_to_same_weights(home, monkeypatch):
    one_seed = dataclasses.replace(MICRO, seeds=(0,))
    real = train_mod.add_revision

    def crash_at_step8(cache, repo, revision, model, tok):
        if revision == "step8":
            raise KeyboardInterrupt
        return real(cache, repo, revision, model, tok)

    monkeypatch.setattr(train_mod, "add_revision", crash_at_step8)
    with pytest.raises(KeyboardInterrupt):
        ensure_trained(one_seed, progress=False)
    assert (suite_dir(one_seed) / "state-seed0.pt").is_file()
    with pytest.raises(FileNotFoundError, match="not trained"):
        organism_suite(one_seed)
    monkeypatch.setattr(train_mod, "add_revision", real)
    ensure_trained(one_seed, progress=False)
    resumed = refs(one_seed, 0)
    monkeypatch.setenv("LEXPROBE_HOME", str(home / "clean"))
    ensure_trained(one_seed, progress=False)
    assert refs(one_seed, 0) == resumed


def test_cli_suite_spec_for_organism(home, monkeypatch):
    monkeypatch.setitem(train_mod.PROFILES, "micro", MICRO)
    assert resolve_suite("organism-micro").name == "organism-micro"


def test_main_job_report_on_a_micro_organism(home, monkeypatch, capsys):
    monkeypatch.setitem(train_mod.PROFILES, "micro", MICRO)
    from lexprobe.cli import main

    assert main(["run", "--profile", "micro"]) == 0
    out = capsys.readouterr().out
    assert "suite organism-micro: 1 model(s), 2 seed(s), 5 checkpoints" in out
    assert "planted onset: step 4" in out
    assert out.count("lies after the onset (4)") == 2
    assert "PASS (FDR + 1st-diff)" in out
    assert main(["analyse", "--suite", "organism-micro", "--steps", "nonsense"]) == 2
