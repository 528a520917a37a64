"""Suites (hub-cache revisions, local folders, missing/corrupt checkpoints), the results store and sweeps."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_model

import lexprobe.sweep.run as sweep_mod
from lexprobe.checkpoints.hubcache import add_revision, read_ref, refs_folder, repo_folder
from lexprobe.checkpoints.named import resolve_suite
from lexprobe.checkpoints.suites import (
    PYTHIA_STEPS,
    RIVTROTT_STEPS,
    CheckpointUnavailable,
    cached_commit,
    hub_cache,
    load_checkpoint,
    local_folder,
    log_subset,
    parse_steps,
    pythia,
    tokenizer_identity,
    validate_model,
)
from lexprobe.store.results import ResultsStore, StoreConflict
from lexprobe.sweep.run import extract

REPO = "lexprobe-test/tiny-neox"


@pytest.fixture()
def small(stimuli):
    return stimuli.subset(sorted(stimuli.pairs["word"].unique())[:4], name="small")


@pytest.fixture()
def cache(tmp_path, tokenizer):
    """A hub cache with steps 0, 1, 2 of a tiny model (different weights per step) and a dangling ref step3."""
    d = tmp_path / "hub"
    for step in (0, 1, 2):
        add_revision(d, REPO, f"step{step}", tiny_model(len(tokenizer), seed=step), tokenizer)
    (refs_folder(d, REPO) / "step3").write_text("0" * 40)  # branch whose weights are missing
    return d


def test_pythia_grids():
    assert len(PYTHIA_STEPS) == 154 and PYTHIA_STEPS[:12] == (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
    assert PYTHIA_STEPS[-1] == 143000 and len(RIVTROTT_STEPS) == 20 and set(RIVTROTT_STEPS) <= set(PYTHIA_STEPS)
    s = pythia(("14m", "70m"), seeds=(0, 3))
    assert s.repo("14m", 0) == "EleutherAI/pythia-14m" and s.repo("70m", 3) == "EleutherAI/pythia-70m-seed3"
    assert pythia(("70m",), deduped=True).repo("70m", 0) == "EleutherAI/pythia-70m-deduped"
    ck = s.checkpoint("14m", 3, 512)
    assert (ck.repo, ck.revision) == ("EleutherAI/pythia-14m-seed3", "step512")
    with pytest.raises(ValueError, match="extra seeds exist only"):
        pythia(("1b",), seeds=(1,))
    with pytest.raises(ValueError, match="unknown Pythia size"):
        pythia(("13m",))
    assert resolve_suite("pythia-14m:seeds=0-9").seeds == tuple(range(10))


def test_step_selection():
    sub = log_subset(PYTHIA_STEPS, 12)
    assert sub[0] == 0 and sub[-1] == 143000 and 8 <= len(sub) <= 12
    assert log_subset(PYTHIA_STEPS, 1) == (143000,) and log_subset(PYTHIA_STEPS, 0) == ()
    assert log_subset((0, 1, 2), 5) == (0, 1, 2)
    assert parse_steps("rivtrott", PYTHIA_STEPS) == RIVTROTT_STEPS
    assert parse_steps("0,512", PYTHIA_STEPS) == (0, 512)
    with pytest.raises(ValueError, match=r"steps \[3\] are not in this suite"):
        parse_steps("0,3", PYTHIA_STEPS)


def test_pythia_sizes_come_from_the_shapes_table_and_suites_imports_light():
    """One list of sizes (lexprobe.checkpoints.shapes.PYTHIA_SHAPES); importing lexprobe.checkpoints.suites loads
    neither transformers (the
    table's module imports it only where used) nor the organism."""
    code = ("import sys, lexprobe.checkpoints.suites as s, lexprobe.checkpoints.shapes as sh\n"
            "assert s.PYTHIA_SIZES == tuple(sh.PYTHIA_SHAPES) and len(s.PYTHIA_SIZES) == 10\n"
            "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(('transformers', 'tokenizers'))}"
            " | {m for m in sys.modules if m.startswith('lexprobe.organism')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_hub_cache_paths_come_from_hubcache(cache):
    """models--ORG--NAME and refs/ are spelled in lexprobe.checkpoints.hubcache only; no cache_dir means the hub's
    default."""
    from huggingface_hub import constants

    assert repo_folder(None, "EleutherAI/pythia-14m") == Path(constants.HF_HUB_CACHE) / "models--EleutherAI--pythia-14m"
    assert repo_folder(cache, REPO) == cache / "models--lexprobe-test--tiny-neox"
    ck = hub_cache(cache, REPO).checkpoint("tiny-neox", 0, 1)
    assert cached_commit(ck) == read_ref(cache, REPO, "step1") == (refs_folder(cache, REPO) / "step1").read_text()
    assert read_ref(cache, REPO, "step9") is None and cached_commit(dataclasses.replace(ck, revision="step9")) is None


def test_tokenizer_identity_hashes_the_files_on_disk_without_loading_them(cache, tmp_path):
    """Equal for two revisions saved with the same tokenizer, changed by any change of a tokenizer file, None where no
    revision is on disk (the dangling step3, an unknown branch); a local folder is hashed the same way."""
    suite = hub_cache(cache, REPO)
    ident = [tokenizer_identity(suite.checkpoint("tiny-neox", 0, s)) for s in (0, 1)]
    assert ident[0] is not None and ident[0] == ident[1]
    assert tokenizer_identity(dataclasses.replace(suite.checkpoint("tiny-neox", 0, 1), revision="step3")) is None
    assert tokenizer_identity(dataclasses.replace(suite.checkpoint("tiny-neox", 0, 1), revision="step9")) is None
    folder = tmp_path / "local"
    folder.mkdir()
    snapshot = repo_folder(cache, REPO) / "snapshots" / read_ref(cache, REPO, "step1")
    for f in snapshot.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    local = dataclasses.replace(suite.checkpoint("tiny-neox", 0, 1), repo=None, revision=None, path=str(folder))
    assert tokenizer_identity(local) == ident[1]
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text().replace("<|endoftext|>", "<|eot|>"))
    assert tokenizer_identity(local) not in (None, ident[1])


def test_hub_cache_revisions_load_offline(cache, tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    suite = hub_cache(cache, REPO, name="tiny")
    assert suite.steps == (0, 1, 2, 3)
    loaded = [load_checkpoint(suite.checkpoint(suite.models[0], 0, s)) for s in (1, 2)]
    for step, ld in zip((1, 2), loaded):
        ref = (refs_folder(cache, REPO) / f"step{step}").read_text()
        assert ld.commit == ref  # the revision was resolved, not ignored
        qkv = "gpt_neox.layers.0.attention.query_key_value.weight"
        expected = tiny_model(len(tokenizer), seed=step).state_dict()[qkv]
        torch.testing.assert_close(ld.model.state_dict()[qkv], expected)
    assert loaded[0].weights_hash != loaded[1].weights_hash
    with pytest.raises(CheckpointUnavailable, match="step3"):
        load_checkpoint(suite.checkpoint(suite.models[0], 0, 3))


def test_refuses_fake_eleutherai_repo(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="refusing"):
        add_revision(tmp_path, "EleutherAI/pythia-14m", "step0", tiny_model(len(tokenizer)), tokenizer)


def test_validation_rejects_non_eager_attention(tokenizer):
    m = tiny_model(len(tokenizer))
    m.config._attn_implementation = "sdpa"
    with pytest.raises(CheckpointUnavailable, match="attention must be eager"):
        validate_model(m, "test")


def test_local_folder_and_corrupt_checkpoint_skipped(tmp_path, tokenizer, small):
    for step in (0, 10, 20):
        tiny_model(len(tokenizer), seed=step).save_pretrained(tmp_path / "suite" / f"step{step}")
        tokenizer.save_pretrained(tmp_path / "suite" / f"step{step}")
    (tmp_path / "suite" / "step10" / "model.safetensors").write_bytes(b"not a safetensors file")
    suite = local_folder(tmp_path / "suite")
    assert suite.steps == (0, 10, 20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = extract(suite, small, root=tmp_path / "res", progress=False)
    assert list(status["status"]) == ["measured", "skipped", "measured"]
    assert any("skipping suite/local/seed0/step10" in str(w.message) for w in caught)
    store = ResultsStore(tmp_path / "res")
    assert list(store.skipped()["step"]) == [10]
    assert load_checkpoint(suite.checkpoint("local", 0, 0)).commit.startswith("local-")


def test_sweep_skips_missing_then_rerun_does_no_model_work(cache, small, tmp_path, monkeypatch):
    suite = hub_cache(cache, REPO, name="tiny")
    with pytest.warns(UserWarning, match="step3"):
        status = extract(suite, small, root=tmp_path / "res", progress=False)
    assert list(status["status"]) == ["measured"] * 3 + ["skipped"]
    df = ResultsStore(tmp_path / "res").load("distances", suite="tiny")
    assert sorted(df["step"].unique()) == [0, 1, 2]
    assert len(df) == 3 * len(small.pairs) * 3  # 3 steps x pairs x (2 layers + embeddings)
    heads = ResultsStore(tmp_path / "res").load("heads")
    assert set(heads.columns) >= {"model", "seed", "step", "layer", "head", "cue_attn", "prev_attn", "entropy"}

    def no_loading(*a, **k):
        raise AssertionError("a finished checkpoint was loaded again")

    monkeypatch.setattr(sweep_mod, "load_checkpoint", no_loading)
    again = extract(suite.with_(steps=(0, 1, 2)), small, root=tmp_path / "res", progress=False)
    assert list(again["status"]) == ["cached"] * 3


def test_checkpoint_killed_half_measured_resumes_with_only_the_missing_conditions(cache, small, tmp_path,
                                                                                   monkeypatch):
    from lexprobe.engine.extract import INTACT
    from lexprobe.engine.interventions import HeadAblation

    suite = hub_cache(cache, REPO, name="tiny").with_(steps=(0, 1, 2))
    conds = [INTACT, HeadAblation(((0, 0),), "zero"), HeadAblation(((1, 1),), "zero")]
    extract(suite, small, root=tmp_path / "clean", conditions=conds, progress=False)

    real_write = ResultsStore.write_many
    calls = {"n": 0}

    def crash_on_fifth(self, entries):
        calls["n"] += 1
        real_write(self, entries)
        if calls["n"] == 5:  # checkpoint 1: two of its three conditions stored, then the process dies
            raise KeyboardInterrupt

    monkeypatch.setattr(sweep_mod, "FLUSH_SECONDS", 0.0)  # every condition is written as soon as it is measured
    monkeypatch.setattr(ResultsStore, "write_many", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        extract(suite, small, root=tmp_path / "resumed", conditions=conds, progress=False)
    monkeypatch.setattr(ResultsStore, "write_many", real_write)
    status = extract(suite, small, root=tmp_path / "resumed", conditions=conds, progress=False)
    assert list(status["status"]) == ["cached"] * 5 + ["measured"] * 4
    for m in ("distances", "heads", "embeddings"):
        a = ResultsStore(tmp_path / "clean").load(m)
        b = ResultsStore(tmp_path / "resumed").load(m)
        if m == "embeddings":
            np.testing.assert_array_equal(np.stack(a["embedding"]), np.stack(b["embedding"]))
            a, b = a.drop(columns="embedding"), b.drop(columns="embedding")
        pd.testing.assert_frame_equal(a, b)
    step1 = next((tmp_path / "resumed").rglob("step1"))
    assert sorted(f.name.split("-")[0] for f in step1.iterdir()) == ["distances", "embeddings", "heads",
                                                                     "manifest.json"]  # parts merged at the end


def test_changed_stimuli_detected_not_mixed(cache, small, tmp_path):
    suite = hub_cache(cache, REPO, name="tiny").with_(steps=(0,))
    extract(suite, small, root=tmp_path / "res", progress=False)
    pairs = small.pairs.copy()
    pairs.loc[0, "same"] = not pairs.loc[0, "same"]
    from lexprobe.stimuli.tables import from_pairs

    changed = from_pairs(pairs.drop(columns=["pair_id", "s1", "s2"]), name="small")
    assert changed.hash != small.hash
    with pytest.raises(StoreConflict, match="fingerprint"):
        extract(suite, changed, root=tmp_path / "res", progress=False)


def test_tampered_result_file_detected(cache, small, tmp_path):
    suite = hub_cache(cache, REPO, name="tiny").with_(steps=(0,))
    extract(suite, small, root=tmp_path / "res", progress=False)
    f = next(Path(tmp_path / "res").rglob("distances-*.parquet"))
    pd.read_parquet(f).iloc[:5].to_parquet(f)
    with pytest.raises(StoreConflict, match="sha256"):
        ResultsStore(tmp_path / "res").load("distances")


def test_loaded_model_is_eager_and_fp32(cache, monkeypatch):
    ld = load_checkpoint(hub_cache(cache, REPO).checkpoint("tiny-neox", 0, 0))
    assert ld.model.config._attn_implementation == "eager"
    assert next(ld.model.parameters()).dtype == torch.float32
    assert type(ld.model).__name__ == "GPTNeoXForCausalLM" and not ld.model.training


def test_provenance_flags_identical_consecutive_checkpoints(tmp_path, tokenizer, small, monkeypatch):
    d = tmp_path / "hub"
    add_revision(d, REPO, "step0", tiny_model(len(tokenizer), seed=0), tokenizer)
    add_revision(d, REPO, "step1", tiny_model(len(tokenizer), seed=1), tokenizer)
    add_revision(d, REPO, "step2", tiny_model(len(tokenizer), seed=1), tokenizer)  # branch serving old weights
    status = extract(hub_cache(d, REPO, name="tiny"), small, root=tmp_path / "res", progress=False)
    # on disk before loading: the integrity check skips the duplicate, never measured
    assert status.set_index("step")["status"].to_dict() == {0: "measured", 1: "measured", 2: "skipped"}
    assert "weights identical to step 1's" in status.set_index("step").loc[2, "reason"]
    # a revision that could not be checked before loading (downloaded by the sweep) is flagged after measuring
    monkeypatch.setattr("lexprobe.sweep.run.problems", lambda cks, model_type=None: {})
    extract(hub_cache(d, REPO, name="tiny"), small, root=tmp_path / "res", progress=False)
    prov = ResultsStore(tmp_path / "res").provenance()
    assert list(prov["same_as_previous"]) == [False, False, True]
    assert prov["commit"].iloc[1] == prov["commit"].iloc[2]  # identical files, identical commit


def test_bad_step_specs_and_numpy_ints():
    with pytest.raises(ValueError, match="N >= 1"):
        parse_steps("log:0", PYTHIA_STEPS)
    ck = pythia().checkpoint("14m", np.int64(0), np.int64(512))
    assert type(ck.step) is int and type(ck.seed) is int


def test_cached_result_of_a_moved_branch_is_refused(cache, small, tmp_path, tokenizer):
    suite = hub_cache(cache, REPO, name="tiny").with_(steps=(1,))
    extract(suite, small, root=tmp_path / "res", progress=False)
    add_revision(cache, REPO, "step1", tiny_model(len(tokenizer), seed=99), tokenizer)  # branch now elsewhere
    with pytest.raises(StoreConflict, match="now points to"):
        extract(suite, small, root=tmp_path / "res", progress=False)


def test_deduped_suite_has_no_seeds(capsys):
    assert resolve_suite("pythia-70m-deduped").seeds == (0,)
    assert resolve_suite("pythia-70m-deduped:seeds=0").repo("70m", 0) == "EleutherAI/pythia-70m-deduped"
    with pytest.raises(ValueError, match="no deduped seed repos.*seeds \\[1, 2, 3, 4, 5, 6, 7, 8, 9\\]"):
        resolve_suite("pythia-70m-deduped:seeds=0-9")
    with pytest.raises(ValueError, match="no deduped seed repos"):
        pythia(("160m",), seeds=(0, 3), deduped=True)
    from lexprobe.cli import main

    assert main(["extract", "--suite", "pythia-70m-deduped:seeds=0-9"]) == 2
    assert "pythia-70m-deduped exists only as the original run" in capsys.readouterr().err


def _import_graph() -> dict[str, set[str]]:
    """Module -> lexprobe modules it imports anywhere in its source (also inside functions)."""
    root = Path(__file__).resolve().parents[1]
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (root / "lexprobe").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                          for a in node.names}
        graph[mod] = {n for n in names if n in files and n != "lexprobe"}
    return graph


def test_import_graph_has_no_cycles():
    graph = _import_graph()
    assert not [m for m in graph["lexprobe.checkpoints.suites"] | graph["lexprobe.store.results"] if
    m.startswith("lexprobe.organism")]
    assert graph["lexprobe.base.files"] == set()  # a base module
    with pytest.raises(ValueError, match="lexprobe.organism.suite.resolve"):
        resolve_suite("organism")  # suites does not know the organism; the layer above resolves it
    state: dict[str, str] = {}

    def visit(mod: str, path: list[str]) -> None:
        if state.get(mod) == "done":
            return
        assert state.get(mod) != "open", f"import cycle: {' -> '.join(path + [mod])}"
        state[mod] = "open"
        for dep in sorted(graph[mod]):
            visit(dep, path + [mod])
        state[mod] = "done"

    for mod in sorted(graph):
        visit(mod, [])


def test_several_stimulus_sets_share_one_load_per_checkpoint(cache, small, stimuli, tmp_path, monkeypatch):
    """Stage 3's perturbed sets: every set measured from one load of each checkpoint, each stored as if alone."""
    suite = hub_cache(cache, REPO, name="tiny")
    other = stimuli.subset(sorted(stimuli.pairs["word"].unique())[4:6], name="other")
    loads: list[int] = []
    real = sweep_mod.SweepJob.load
    monkeypatch.setattr(sweep_mod.SweepJob, "load", lambda self, ck: loads.append(ck.step) or real(self, ck))
    status = extract(suite, [small, other], steps=(0, 1), root=tmp_path / "both", progress=False)
    assert sorted(loads) == [0, 1] and len(status) == 4 and set(status["status"]) == {"measured"}
    alone = extract(suite, other, steps=(0, 1), root=tmp_path / "alone", progress=False)
    assert set(alone["status"]) == {"measured"}
    for name in ("distances", "heads"):
        pd.testing.assert_frame_equal(ResultsStore(tmp_path / "both").load(name, stimuli="other"),
                                      ResultsStore(tmp_path / "alone").load(name, stimuli="other"))


def test_save_heads_false_stores_distances_only_and_counts_as_done(cache, small, tmp_path):
    from lexprobe.engine.extract import ExtractConfig

    suite = hub_cache(cache, REPO, name="tiny").with_(steps=(0, 1))
    cfg = ExtractConfig(save_heads=False, save_embeddings=False)
    assert cfg.measurements == ("distances",) and cfg.fingerprint_fields() == ExtractConfig().fingerprint_fields()
    extract(suite, small, root=tmp_path / "res", config=cfg, progress=False)
    store = ResultsStore(tmp_path / "res")
    assert len(store.load("distances")) == 2 * len(small.pairs) * 3
    with pytest.raises(FileNotFoundError, match="heads"):
        store.load("heads")
    again = extract(suite, small, root=tmp_path / "res", config=cfg, progress=False)
    assert list(again["status"]) == ["cached"] * 2
    full = extract(suite, small, root=tmp_path / "res", progress=False)  # asking for heads now measures them
    assert list(full["status"]) == ["measured"] * 2 and len(store.load("heads")) > 0


def test_the_sweep_measures_any_condition_through_one_seam(cache, small, tmp_path):
    """A condition of a kind the engine has never seen (here: counting each checkpoint's sentences) is measured,
    stored, resumed and loaded like the intact model, through its own ``measurements``, ``measure`` and ``cost``."""
    from dataclasses import dataclass
    from typing import ClassVar

    from lexprobe.engine.conditions import Named

    @dataclass(frozen=True)
    class Count(Named):
        kind: ClassVar[str] = "count"
        scale: int = 1

        def measurements(self, config):
            return ("counts",)

        def measure(self, model, tokenizer, stimuli, config, donor, progress):
            return {"counts": pd.DataFrame({"sentences": [len(stimuli.sentences) * self.scale]})}

        def cost(self, n_layers, n_heads):
            return 0.0

    suite = hub_cache(cache, REPO, name="tiny").with_(steps=(0, 1))
    cond = Count(scale=2)
    first = extract(suite, small, root=tmp_path / "res", conditions=[cond], progress=False, scheduler="serial")
    again = extract(suite, small, root=tmp_path / "res", conditions=[cond], progress=False, scheduler="serial")
    assert list(first["status"]) == ["measured"] * 2 and list(again["status"]) == ["cached"] * 2
    got = ResultsStore(tmp_path / "res").load("counts", condition=cond.condition)
    assert list(got["sentences"]) == [2 * len(small.sentences)] * 2 and list(got["step"]) == [0, 1]
