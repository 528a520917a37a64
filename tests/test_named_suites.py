"""Checkpoint suites by name: the published revision naming schemes parsed (irregular names included), revisions
listed offline from hub caches built here, and checkpoint defects (an empty revision, duplicated weights, another
model_type) skipped with their reasons before anything is measured; each named suite runs stages 1-5."""

from __future__ import annotations

import pytest
from test_families import family_model

from lexprobe import Study
from lexprobe.checkpoints.bpe import train_tokenizer
from lexprobe.checkpoints.hubcache import add_revision, refs_folder, snapshots_folder
from lexprobe.checkpoints.integrity import problems
from lexprobe.checkpoints.named import PUBLISHED, named_suite, resolve_suite
from lexprobe.checkpoints.revisions import (
    FOLDERS,
    NAMINGS,
    OLMO2_1B_TOKENS_PER_STEP,
    UNITS,
    crfm_steps,
    naming_for,
    naming_of,
)
from lexprobe.checkpoints.suites import hub_cache, load_tokenizer
from lexprobe.stages.registry import Skipped
from lexprobe.stimuli.align import encode, special_prefix
from lexprobe.views import viz


def test_published_names_parse_with_steps_tokens_and_stages():
    olmo2, olmo = NAMINGS["olmo2"], NAMINGS["olmo"]
    assert olmo2.parse("stage1-step1000-tokens3B") == olmo2.parse("stage1-step1000-tokens3B")
    r = olmo2.parse("stage1-step1000-tokens3B")
    assert (r.step, r.tokens, r.stage) == (1000, 3 * 10**9, 1)
    assert olmo2.parse("step2000-tokens5B").stage == 1  # published without the prefix too
    assert olmo2.parse("stage2-ingredient2-step23852-tokens51B").stage == 2
    assert olmo.parse("step2000-tokens8389M").tokens == 8389 * 10**6
    assert NAMINGS["crfm"].parse("checkpoint-10").step == 10
    assert NAMINGS["amber"].parse("ckpt_000").step == 0 and NAMINGS["amber"].parse("ckpt_358").step == 358
    assert NAMINGS["smollm2"].parse("step-40000").step == 40000
    assert NAMINGS["pythia"].parse("step143000").step == 143000
    assert NAMINGS["amber"].format(42) == "ckpt_042" and NAMINGS["smollm2"].format(40000) == "step-40000"
    assert olmo2.format(10000, 10000 * OLMO2_1B_TOKENS_PER_STEP) == "stage1-step10000-tokens21B"  # rounded up
    for naming, bad in (("crfm", "checkpoint_10"), ("olmo", "step1000"), ("smollm2", "step40000"), ("amber", "main")):
        assert NAMINGS[naming].parse(bad) is None
    kept, left = olmo2.read(["stage1-step0-tokens0B", "step1000-tokens5B", "stage1-step1000-tokens5B",
                             "stage2-ingredient1-step100-tokens1B", "main", "weird-branch"])
    assert [r.name for r in kept.values()] == ["stage1-step0-tokens0B", "stage1-step1000-tokens5B"]
    assert "another name of step 1000" in left["step1000-tokens5B"]
    assert "stage 2" in left["stage2-ingredient1-step100-tokens1B"] and "main" in left["main"]
    assert "not a olmo2 revision name" in left["weird-branch"]


def test_the_crfm_grid_has_609_checkpoints_per_seed():
    steps = crfm_steps()
    assert len(steps) == 609 and len(set(steps)) == 609
    assert steps[:3] == (0, 10, 20) and 1950 in steps and 2000 in steps and 19900 in steps and steps[-1] == 400000
    assert 1975 not in steps and 20500 not in steps


def test_a_user_pattern_needs_a_step_group():
    assert naming_of(r"ckpt-(?P<step>\d+)").parse("ckpt-7").step == 7
    assert naming_of(r"ckpt-(?P<step>\d{3})").parse("ckpt-007").step == 7  # braces of a regex: still a regex
    with pytest.raises(ValueError, match="reads names but writes none"):
        naming_of(r"ckpt-(?P<step>\d+)").format(7)
    with pytest.raises(ValueError, match="named group 'step'"):
        naming_of(r"ckpt-(\d+)")
    with pytest.raises(ValueError, match="not a regular expression"):
        naming_of("ckpt-(")


@pytest.mark.parametrize("naming", [*NAMINGS.values(), naming_of("run{step}.ckpt"), naming_of("{step}-tokens{tokens}")],
                         ids=[*NAMINGS, "user", "user-tokens"])
def test_every_naming_reads_back_what_it_writes(naming):
    """One Naming per scheme both writes and reads: a name it writes parses to the same step (and the tokens seen,
    rounded up to its unit)."""
    unit = UNITS[naming.unit]
    for step, tokens in ((0, 0), (1, unit), (42, 3 * unit), (1907359, 1907359 * 2**21)):
        rev = naming.parse(naming.format(step, tokens))
        assert rev is not None and rev.step == step and rev.stage == 1
        if "{tokens}" in naming.template:
            assert 0 <= rev.tokens - tokens < unit
        else:
            assert rev.tokens is None


def test_a_folder_listing_picks_the_naming_that_reads_it():
    assert naming_for(["step0", "step8", "logs"]) is NAMINGS["pythia"]
    assert naming_for(["step-0", "step-8", "step-16", "step8"]) is NAMINGS["smollm2"]
    assert naming_for(["checkpoint-500", "checkpoint-1000", "runs"]) is NAMINGS["crfm"]
    assert naming_for(["global_step10", "global_step20", "latest"]) is NAMINGS["deepspeed"]
    assert naming_for(["logs", "config.json"]) is None
    user = naming_of("epoch{step}")
    assert naming_for(["epoch1", "epoch2"], (*FOLDERS, user)) is user
    kept, left = naming_for(["global_step10", "global_step20", "latest"]).read(["global_step10", "latest"])
    assert list(kept) == [10] and "latest" in left


def test_every_named_suite_is_in_the_suite_help(capsys):
    """The help of the study's suite setting, of --suite and the unknown-suite error are generated from the suite
    registry: every published suite (and the hub, local and hub-cache forms) appears in each by itself."""
    from dataclasses import fields

    from lexprobe.cli import build_parser
    from lexprobe.study import Study

    texts = [next(f for f in fields(Study) if f.name == "suite").metadata["help"]]
    for command in ("extract", "inflection"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        texts.append(capsys.readouterr().out)
    with pytest.raises(ValueError, match="unknown suite") as err:
        resolve_suite("gpt-17")
    texts.append(str(err.value))
    for text in texts:
        flat = "".join(text.split())  # argparse wraps lines, at hyphens too
        for name in [*PUBLISHED, "organism", "pythia-14m", "hub:ORG/NAME", "local:PATH", "hubcache:PATH:ORG/NAME"]:
            assert name in flat, (name, text)
    assert "crfm-gpt2-small[:seeds=alias,...]" in texts[0]


# per named suite: the family, the revisions written (name -> weight seed; "dup" copies the previous one's weights,
# "empty" writes a revision without weights, "other" one in another family), with a gap and an irregular name
CACHES = {
    "crfm-gpt2-small:seeds=alias,battlestar": ("gpt2", {"checkpoint-0": 1, "checkpoint-10": 2, "checkpoint-50": 3,
                                                        "checkpoint-100": 4, "checkpoint-150": "dup",
                                                        "checkpoint_200": 5}),
    "olmo-1b": ("olmo", {"step0-tokens0B": 1, "step1000-tokens4B": 2, "step3000-tokens12B": 3,
                         "step4000-tokens16B": 4, "step5000-tokens21B": "other", "step6000": 5}),
    "olmo2-1b": ("olmo2", {"stage1-step0-tokens0B": 1, "stage1-step1000-tokens3B": 2, "step1000-tokens3B": 2,
                           "stage1-step3000-tokens7B": 3, "stage1-step4000-tokens9B": 4,
                           "stage1-step5000-tokens11B": "dup", "stage2-ingredient1-step100-tokens1B": 5,
                           "stage1-step6000": 6}),
    "amber": ("llama", {"ckpt_000": 1, "ckpt_001": 2, "ckpt_003": 3, "ckpt_004": 4, "ckpt_005": "empty",
                        "main": 4}),
    "smollm2-135m": ("llama", {"step-0": 1, "step-2000": 2, "step-6000": 3, "step-8000": 4, "step-10000": "dup",
                               "step_12000": 5}),
}


def build_cache(cache, spec: str, tokenizer) -> None:
    arch, revisions = CACHES[spec]
    p = PUBLISHED[spec.split(":")[0]]
    seeds = p.seeds[:2] if spec.startswith("crfm") else p.seeds
    for x, name in seeds:
        repo = p.repo_template.format(seed=x, seed_name=name, model=p.model, seed_suffix="")
        previous = None
        for rev, seed in revisions.items():
            if seed == "empty":  # a branch whose snapshot has no weights
                add_revision(cache, repo, rev, family_model(arch, len(tokenizer), 9), tokenizer)
                snap = snapshots_folder(cache, repo) / (refs_folder(cache, repo) / rev).read_text()
                for f in snap.glob("*.safetensors"):
                    f.unlink()
                continue
            other = "llama" if seed == "other" else arch
            w = previous if seed == "dup" else (7 if seed == "other" else 100 * x + int(seed))
            add_revision(cache, repo, rev, family_model(other, len(tokenizer), w), tokenizer)
            previous = w


@pytest.fixture(scope="module")
def llama_tokenizer(stimuli):
    """Llama's conventions (Amber ships Llama's tokenizer): "▁" word marks and ``<s>`` before every text."""
    return train_tokenizer(list(stimuli.sentences["sentence"]) * 3, vocab_size=400, style="llama")


@pytest.mark.parametrize("spec", list(CACHES))
def test_each_named_suite_runs_stages_1_to_5_and_lists_what_it_skipped(spec, tmp_path, stimuli, tokenizer,
                                                                         llama_tokenizer, monkeypatch):
    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path / "home"))
    cache = tmp_path / "hub"
    build_cache(cache, spec, llama_tokenizer if spec == "amber" else tokenizer)
    suite = resolve_suite(spec, str(cache))
    loaded = load_tokenizer(suite.checkpoints()[0])  # the family's tokenizer, as the cache serves it
    if spec == "amber":  # every sentence is measured after <s>, as Llama models were trained
        assert special_prefix(loaded) == [1]
        enc = encode(loaded, stimuli.sentences.head(3))
        assert (enc.input_ids[:, 0] == 1).all() and not enc.target_mask[:, 0].any()
    else:
        assert special_prefix(loaded) == []
    assert suite.metadata["listed_from"] == "hub cache"
    left = suite.metadata["left_out"]
    naming = PUBLISHED[spec.split(":")[0]].naming
    assert any(naming.parse(n) is None for n in left)  # an irregular name, listed with why
    assert set(CACHES[spec][1]) == set(left) | {name for _, name in suite.revisions}  # every branch accounted for
    small = stimuli.subset(sorted(stimuli.pairs["word"].unique())[:4], name="small4")
    study = Study(suite, small, n_boot=10, n_perm=50, n_random=2, n_random_dev=1, map_steps=2, perturb_steps=2,
                  redundancy_steps=1, progress=False)
    s1 = study.inflection
    skipped = s1.status[s1.status["status"] == "skipped"].drop_duplicates(["model", "seed", "step"])
    reasons = " ".join(skipped["reason"])
    kinds = set(map(str, CACHES[spec][1].values()))
    assert ("weights identical to step" in reasons) == ("dup" in kinds)
    assert ("has no weight files" in reasons) == ("empty" in kinds)
    assert ("is not the suite's 'olmo'" in reasons) == ("other" in kinds)
    assert len(skipped) == len(suite.seeds) * len(kinds & {"dup", "empty", "other"})
    assert not set(skipped["step"]) & set(s1.best["step"])  # nothing skipped was measured
    if spec.startswith("olmo"):  # tokens seen, parsed from the names, beside each measured step
        assert s1.best["tokens"].notna().all() and s1.best["tokens"].max() >= 9 * 10**9
        assert s1.best.loc[s1.best["step"] == 1000, "tokens"].iloc[0] in (3 * 10**9, 4 * 10**9)
        chart = viz.suites_chart({spec: s1.best, "again": s1.best}).to_dict()
        assert chart["encoding"]["x"]["field"] == "tokens"
    else:
        with pytest.raises(ValueError, match="without tokens seen"):
            viz.suites_chart({spec: s1.best})
    for stage in ("discovery", "perturbation", "causal"):
        assert not isinstance(study.outcome(stage), Skipped), stage
    replication = study.outcome("replication")
    assert isinstance(replication, Skipped) == (len(suite.seeds) == 1)


def test_the_duplicated_weights_check_fires_on_a_pythia_shaped_cache(tmp_path, tokenizer):
    for step, seed in ((0, 1), (1, 2), (2, 2), (4, 3)):  # step 2 serves step 1's weights
        add_revision(tmp_path, "lexprobe-test/pythia-like", f"step{step}", family_model("gpt_neox", len(tokenizer),
                                                                                        seed), tokenizer)
    suite = hub_cache(tmp_path, "lexprobe-test/pythia-like")
    bad = problems(suite.checkpoints())
    assert {ck.step: why for ck, why in bad.items()} == {2: "weights identical to step 1's (another checkpoint's "
                                                          "upload served under this name)"}


def test_a_named_suite_without_a_listing_says_how_to_get_one(tmp_path):
    with pytest.raises(ValueError, match="listed only by the hub"):
        resolve_suite("olmo-1b", str(tmp_path))
    with pytest.raises(ValueError, match="seeds=NAME"):
        named_suite("crfm-gpt2-small:seeds=nobody", str(tmp_path))
    assert len(resolve_suite("crfm-gpt2-small", str(tmp_path)).steps) == 609  # the published grid


def test_a_defect_found_later_excludes_what_an_earlier_run_stored(tmp_path, stimuli, tokenizer, monkeypatch):
    monkeypatch.setenv("LEXPROBE_HOME", str(tmp_path / "home"))
    for step, seed in ((0, 1), (1, 2), (2, 2), (4, 3), (8, 4)):  # step 2 serves step 1's weights
        add_revision(tmp_path / "hub", "lexprobe-test/pythia-like", f"step{step}",
                     family_model("gpt_neox", len(tokenizer), seed), tokenizer)
    suite = hub_cache(tmp_path / "hub", "lexprobe-test/pythia-like")
    small = stimuli.subset(sorted(stimuli.pairs["word"].unique())[:4], name="small4")
    with monkeypatch.context() as m:  # a run from before the check: the duplicate is measured and stored
        m.setattr("lexprobe.sweep.run.problems", lambda cks, model_type=None: {})
        before = Study(suite, small, n_boot=10, cache=False, progress=False).inflection
    assert 2 in set(before.best["step"])
    after = Study(suite, small, n_boot=10, cache=False, progress=False).inflection
    assert 2 not in set(after.best["step"]) and set(after.best["step"]) == {0, 1, 4, 8}
    assert "weights identical to step 1's" in " ".join(after.status["reason"])


def test_olmo2_1b_plans_from_its_published_stage1_list_with_names_that_parse_back():
    suite = resolve_suite("olmo2-1b", "/nonexistent")
    assert len(suite.steps) == 195 and suite.steps[:3] == (0, 300, 10000) and suite.steps[-1] == 1907359
    assert {23100, 66200} <= set(suite.steps)
    assert "derived" in suite.metadata["listed_from"]
    naming = NAMINGS["olmo2"]
    for step, name in suite.revisions:
        rev = naming.parse(name)
        assert rev is not None and rev.step == step and rev.stage == 1, name
        assert rev.tokens is not None and 0 <= rev.tokens - suite.metadata["tokens"][step] < 10**9
    assert dict(suite.revisions)[10000] == "stage1-step10000-tokens21B"
    # the rounding reproduces a published name: stage 2's last step, 23,852 steps of 2**21 tokens, is "tokens51B"
    assert -(-23852 * OLMO2_1B_TOKENS_PER_STEP // 10**9) == 51
