"""--evict: a hub revision's downloaded files leave the cache once its unit is stored; the user's files stay."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from conftest import tiny_model

import lexprobe.sweep.run as sweep_mod
from lexprobe.checkpoints.evict import cache_files
from lexprobe.checkpoints.hubcache import refs_folder, repo_folder, snapshots_folder
from lexprobe.checkpoints.suites import Suite, load_checkpoint
from lexprobe.store.results import ResultsStore
from lexprobe.sweep.run import extract

REPO = "lexprobe-test/evict-neox"


def download(cache: Path, revision: str, folder: Path) -> None:
    """Lay out ``folder`` as a hub download does: ``blobs/<sha256>``, ``snapshots/<commit>/<name>`` linking to
    ``../../blobs/<sha256>``, ``refs/<revision>``; blobs already present are reused (identical files share one)."""
    base = repo_folder(cache, REPO)
    files = sorted(folder.iterdir())
    commit = hashlib.sha1(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()
    snap = snapshots_folder(cache, REPO) / commit
    snap.mkdir(parents=True, exist_ok=True)
    (base / "blobs").mkdir(exist_ok=True)
    for f in files:
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        if not (base / "blobs" / sha).exists():
            shutil.copyfile(f, base / "blobs" / sha)
        if not (snap / f.name).exists():
            (snap / f.name).symlink_to(Path("../../blobs", sha))
    refs_folder(cache, REPO).mkdir(exist_ok=True)
    (refs_folder(cache, REPO) / revision).write_text(commit)


def test_evict_deletes_only_what_the_sweep_downloaded(tmp_path, tokenizer, stimuli, monkeypatch):
    small = stimuli.subset(sorted(stimuli.pairs["word"].unique())[:2], name="small")
    remote, cache = tmp_path / "remote", tmp_path / "hub"
    for step in (0, 1, 2):
        tiny_model(len(tokenizer), seed=step).save_pretrained(remote / f"step{step}")
        tokenizer.save_pretrained(remote / f"step{step}")
    download(cache, "step0", remote / "step0")  # the user had step0 before the sweep
    # the user also had a blob that no snapshot links to until the sweep downloads step1, which links to it
    orphan = (remote / "step1" / "model.safetensors").read_bytes()
    (repo_folder(cache, REPO) / "blobs" / hashlib.sha256(orphan).hexdigest()).write_bytes(orphan)
    before = cache_files(repo_folder(cache, REPO))
    snapshots_seen = []

    def fetch_then_load(ck, *args, **kwargs):  # stands in for the hub: download on first use, then load
        download(cache, ck.revision, remote / ck.revision)
        snapshots_seen.append(len(list(snapshots_folder(cache, REPO).iterdir())))
        return load_checkpoint(ck, *args, **kwargs)

    monkeypatch.setattr(sweep_mod, "load_checkpoint", fetch_then_load)
    suite = Suite("tiny", "hub", ("evict-neox",), (0,), (0, 1, 2), repo_template=REPO, cache_dir=str(cache),
                  offline=True)
    status = extract(suite, small, root=tmp_path / "res", progress=False, evict=True)
    assert list(status["status"]) == ["measured"] * 3
    assert cache_files(repo_folder(cache, REPO)) == before  # step1/2 gone, everything of the user's kept
    assert max(snapshots_seen) <= 3  # the user's step0 plus at most two downloaded revisions at any time
    assert sorted(ResultsStore(tmp_path / "res").load("distances")["step"].unique()) == [0, 1, 2]
    shared = [b for b in before if b.startswith("blobs/")]
    assert len(shared) > 2  # the tokenizer blobs step1/2 linked to were the user's, and survived their eviction

    again = extract(suite, small, root=tmp_path / "res", progress=False, evict=True)
    assert list(again["status"]) == ["cached"] * 3
    assert cache_files(repo_folder(cache, REPO)) == before


def test_without_evict_downloads_stay(tmp_path, tokenizer, stimuli, monkeypatch):
    small = stimuli.subset(sorted(stimuli.pairs["word"].unique())[:2], name="small")
    cache = tmp_path / "hub"
    tiny_model(len(tokenizer), seed=1).save_pretrained(tmp_path / "remote")
    tokenizer.save_pretrained(tmp_path / "remote")

    def fetch_then_load(ck, *args, **kwargs):
        download(cache, ck.revision, tmp_path / "remote")
        return load_checkpoint(ck, *args, **kwargs)

    monkeypatch.setattr(sweep_mod, "load_checkpoint", fetch_then_load)
    suite = Suite("tiny", "hub", ("evict-neox",), (0,), (1,), repo_template=REPO, cache_dir=str(cache), offline=True)
    extract(suite, small, root=tmp_path / "res", progress=False)
    assert any(p.endswith("model.safetensors") for p in cache_files(repo_folder(cache, REPO)))
