"""The organism: lexicon coverage, planted onset, determinism, resume, loading through lexprobe.checkpoints.suites."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chi2_contingency

import lexprobe.organism.train as train_mod
from lexprobe.checkpoints.hubcache import refs_folder
from lexprobe.checkpoints.suites import load_checkpoint
from lexprobe.organism.corpus import Corpus, CorpusConfig, load_lexicon
from lexprobe.organism.profiles import PROFILES, Profile, schedule
from lexprobe.organism.suite import ensure_trained, organism_suite, resolve, suite_dir
from lexprobe.organism.train import model_config
from lexprobe.study import Study

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _benchmark(name: str):
    """A script of benchmarks/ as a module (benchmarks/ is not a package and does not go on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


plateau = _benchmark("organism_check").plateau  # the acceptance script's plateau (reported, not required)

MICRO = Profile("micro", seeds=(0, 1), total_steps=8, onset=4, checkpoint_every=4, batch_size=4, seq_len=16,
                vocab_size=300, tokenizer_sentences=400, warmup=2, hidden_size=32, layers=2, heads=4,
                corpus=CorpusConfig(onset=4))


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path))
    return tmp_path


def refs(profile: Profile, seed: int) -> dict[str, str]:
    folder = refs_folder(suite_dir(profile) / "hub", profile.repo(seed))
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
        n_senses = g.groupby("sense")["cue"].apply(lambda cs, lex_sense=lex_sense: len({lex_sense[c] for c in cs}))
        assert n_senses.eq(1).all()


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


def test_model_config_is_pinned():
    """The organism's config (it goes into every checkpoint's config.json, hence its commit) comes from the shared
    :func:`lexprobe.checkpoints.shapes.neox_config`; the organism's fingerprint does not hash it, so a change reaching
    it here
    must bump ``TRAINER_VERSION`` (otherwise cached suites would silently differ from freshly trained ones)."""
    cfg = model_config(PROFILES["default"], 2048)
    got = cfg.to_dict()
    assert {k: got[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size", "max_position_embeddings", "use_parallel_residual",
                                "tie_word_embeddings", "bos_token_id", "eos_token_id", "rope_parameters")} == {
        "vocab_size": 2048, "hidden_size": 128, "num_hidden_layers": 6, "num_attention_heads": 4,
        "intermediate_size": 512, "max_position_embeddings": 2048, "use_parallel_residual": True,
        "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0,
        "rope_parameters": {"rope_theta": 10000, "partial_rotary_factor": 0.25, "rope_type": "default"}}
    assert cfg._attn_implementation == "sdpa"


def test_training_is_deterministic_and_loads_through_suites(home, monkeypatch):
    suite = ensure_trained(MICRO, progress=False, workers=2)
    first = {s: refs(MICRO, s) for s in MICRO.seeds}
    assert {r["processes"] for r in json.loads((suite_dir(MICRO) / "timings.json").read_text()).values()} == {2}
    assert set(first[0]) == {f"step{s}" for s in MICRO.checkpoints}
    assert first[0] != first[1]  # different seeds, different weights
    assert len(set(first[0].values())) == len(MICRO.checkpoints)  # every checkpoint differs from the others
    # same seed, same weights: retrain from scratch elsewhere, in this process instead of two worker processes
    monkeypatch.setenv("LEXPROBE_HOME", str(home / "again"))
    ensure_trained(MICRO, progress=False, workers=1)
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
    state = torch.load(suite_dir(one_seed) / "state-seed0.pt", weights_only=True)  # plain tensors and containers
    assert state["step"] == 4 and set(state) == {"model", "opt", "step"}
    with pytest.raises(FileNotFoundError, match="not trained"):
        organism_suite(one_seed)
    monkeypatch.setattr(train_mod, "add_revision", real)
    ensure_trained(one_seed, progress=False)
    resumed = refs(one_seed, 0)
    monkeypatch.setenv("LEXPROBE_HOME", str(home / "clean"))
    ensure_trained(one_seed, progress=False)
    assert refs(one_seed, 0) == resumed


class _RunsCode:
    """Unpickling this would run ``touch`` on the marker file: a stand-in for a tampered cache."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_tampered_resume_state_is_refused_not_run(home, tmp_path):
    one_seed = dataclasses.replace(MICRO, seeds=(0,))
    suite_dir(one_seed).mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"model": {}, "opt": {}, "step": 4, "payload": _RunsCode(marker)},
               suite_dir(one_seed) / "state-seed0.pt")
    with pytest.raises(RuntimeError, match="state-seed0.pt: resume state holds objects other than tensors"):
        ensure_trained(one_seed, progress=False)
    assert not marker.exists()


def test_cli_suite_spec_for_organism(home, monkeypatch):
    monkeypatch.setitem(PROFILES, "micro", MICRO)
    assert resolve("organism-micro").name == "organism-micro"
    with pytest.raises(ValueError, match="unknown organism profile 'nope'"):
        resolve("organism-nope")


def _first_last(best) -> dict[int, str]:
    """Per seed, R^2 at the first and last checkpoint as the report prints them."""
    return {seed: f"seed {seed}: best-layer r2 {g['r2'].iloc[0]:.3f} at the first checkpoint, "
                  f"{g['r2'].iloc[-1]:.3f} at the last"
            for seed, g in best.sort_values("step").groupby("seed")}


def test_main_job_report_on_a_micro_organism(home, monkeypatch, capsys):
    """End to end through the CLI. The micro organism is too small to develop (its onset answers are NO), so the
    test checks that the report's answers are the ones the stage tables give, not that they are yes; the default
    organism's outcomes are checked by ``python benchmarks/organism_check.py``."""
    monkeypatch.setitem(PROFILES, "micro", MICRO)
    from lexprobe.cli import main

    assert main(["run", "--profile", "micro", "--no-report"]) == 0  # the report: tests/test_supplement.py
    out = capsys.readouterr().out
    study = Study("organism-micro", progress=False)  # reads the stages the run stored
    s1, s2 = study.inflection, study.discovery
    assert s1.onset == 4 and sorted(s1.best["step"].unique()) == list(MICRO.checkpoints)
    for seed, line in _first_last(s1.best).items():
        assert line in out, (seed, line)
    answers = dict(re.findall(r"^seed (\d+): onset interval .* lies after the onset \(4\): (yes|NO);", out, re.M))
    assert answers == {str(r.seed): "yes" if r.onset_low_step > 4 else "NO" for r in s1.inflection.itertuples()}
    passing = out.split("Heads that pass, per seed")[1]
    listed = set(re.findall(r"^ *\S+ +(\d+) +(\d+) +(\d+) ", passing, re.M))  # model, seed, layer, head, ...
    assert listed == {(str(r.seed), str(r.layer), str(r.head)) for r in s2.stats[s2.stats["passes"]].itertuples()}
    assert ("(no rows)" in passing) == (not listed)
    assert main(["inflection", "--suite", "organism-micro", "--steps", "nonsense"]) == 2


def test_run_on_three_checkpoints_reports_stage_1_and_skips_stage_2(home, monkeypatch, capsys):
    monkeypatch.setitem(PROFILES, "micro", MICRO)
    from lexprobe.cli import main

    assert main(["run", "--profile", "micro", "--steps", "0,4,8"]) == 0
    out = capsys.readouterr().out
    s1 = Study("organism-micro", steps="0,4,8", n_boot=0, progress=False).inflection
    assert sorted(s1.best["step"].unique()) == [0, 4, 8]
    for seed, line in _first_last(s1.best).items():
        assert line in out, (seed, line)
    assert re.search(r"^stage 2 skipped: .*needs >= 4 checkpoints, got 3$", out, re.M)
    assert "Heads that pass" not in out


def test_plateau_is_the_widest_stretch_within_ten_percent():
    steps = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048])
    flat_rise_plateau = np.array([.004, .003, .005, .004, .003, .004, .005, .1, .5, .80, .84, .86, .85])
    pl = plateau(steps, flat_rise_plateau, after=16)
    assert (pl.start, pl.end) == (256, 2048) and pl.ratio == 8 and pl.change == pytest.approx(.86 / .80 - 1)
    # the flat start is not a plateau of development: only checkpoints after ``after`` count
    assert plateau(steps, np.full(len(steps), .5), after=100).start == 128
    # a curve that keeps rising by 12% per checkpoint has no plateau; one by 5% per checkpoint has short ones
    assert plateau(steps, 1.12 ** np.arange(len(steps)), after=0) is None
    assert plateau(steps[1:], 1.05 ** np.arange(len(steps) - 1), after=0).ratio == 2
    # the plateau is reported, not required: a curve that is flat, then rises to the end without one, passes
    rising = np.r_[np.full(6, .004), .15 * 1.3 ** np.arange(7)]
    best = pd.DataFrame({"model": "m", "seed": 0, "step": steps, "r2": rising, "best_layer": 1})
    summary = _benchmark("organism_check").curve_summary(best, onset=16).iloc[0]
    assert summary["flat_ok"] and summary["final_ok"] and np.isnan(summary["plateau_ratio"])
    assert not any(c.endswith("_ok") for c in summary.index if c.startswith("plateau"))


def test_a_failing_worker_fails_the_training(home):
    bad = dataclasses.replace(MICRO, name="bad", hidden_size=30)  # 30 is not divisible by 4 heads
    with pytest.raises(RuntimeError, match=r"(?s)training seed [01] failed \(exit code 1\).*divisible"):
        ensure_trained(bad, progress=False, workers=2)


def test_an_organism_spec_can_ask_for_more_seeds_and_names_a_bad_option():
    from lexprobe.organism.suite import organism_profile

    base = organism_profile("organism-planted")
    more = organism_profile("organism-planted:arch=gpt2:seeds=10")
    assert base is not None and more is not None
    assert more.seeds == tuple(range(10)) and more.arch == "gpt2" and more.name == base.name
    assert organism_profile("organism-planted:seeds=10").fingerprint(load_lexicon()) == base.fingerprint(
        load_lexicon())  # the seeds already trained are found, not retrained
    for bad in ("organism:seeds=0", "organism:seeds=x", "organism:arch=bert", "organism:depth=3"):
        with pytest.raises(ValueError, match="bad organism spec"):
            organism_profile(bad)
