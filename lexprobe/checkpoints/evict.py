"""Disk budget for hub sweeps: delete a revision's downloaded files from the Hugging Face cache once its units are
stored, never a file that was in the cache before lexprobe downloaded it.

A hub load with eviction on runs inside :func:`recording`, which lists the repo's cache files before the load and
adds the ones that appeared to the repo's ledger (``<cache>/.locks/lexprobe/<repo folder>/downloaded.json``, beside
the hub's own lock files, which cache scanners skip). :func:`evict` deletes only ledger files of one revision: the
snapshot's links, then each blob that no remaining snapshot links to. Loads hold a shared lock on the repo and
eviction an exclusive one (``flock``), so a blob is never deleted while another thread or process, a Dask worker on
the same cache included, is downloading and linking it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lexprobe.base.files import atomic_write
from lexprobe.checkpoints.hubcache import cache_root, repo_folder, snapshots_folder
from lexprobe.checkpoints.suites import Checkpoint, cached_commit


def _ledger_dir(ck: Checkpoint) -> Path:
    assert ck.repo is not None  # eviction is for hub checkpoints
    d = cache_root(ck.cache_dir) / ".locks" / "lexprobe" / repo_folder(ck.cache_dir, ck.repo).name
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def _locked(ck: Checkpoint, exclusive: bool) -> Iterator[None]:
    with open(_ledger_dir(ck) / "repo.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cache_files(repo_dir: Path) -> set[str]:
    """Paths (relative to the repo folder) of every file and link under ``blobs/`` and ``snapshots/``."""
    found: set[str] = set()
    for sub in ("blobs", "snapshots"):
        for top, _, files in os.walk(repo_dir / sub):
            found.update(Path(top, f).relative_to(repo_dir).as_posix() for f in files)
    return found


def _read_ledger(ck: Checkpoint) -> set[str]:
    p = _ledger_dir(ck) / "downloaded.json"
    return set(json.loads(p.read_text())) if p.is_file() else set()


def _write_ledger(ck: Checkpoint, paths: set[str]) -> None:
    atomic_write(_ledger_dir(ck) / "downloaded.json", json.dumps(sorted(paths), indent=0).encode())


@contextmanager
def recording(ck: Checkpoint) -> Iterator[None]:
    """Around a hub load: add the cache files it created (downloads, even of a failed load) to the ledger."""
    assert ck.repo is not None  # eviction is for hub checkpoints
    repo_dir = repo_folder(ck.cache_dir, ck.repo)
    with _locked(ck, exclusive=False):
        before = cache_files(repo_dir)
        try:
            yield
        finally:
            new = cache_files(repo_dir) - before
    if new:
        with _locked(ck, exclusive=True):
            _write_ledger(ck, _read_ledger(ck) | new)


def _blob_of(link: Path, repo_dir: Path) -> str:
    """The repo-relative path a snapshot link points to."""
    return Path(os.path.normpath(link.parent / os.readlink(link))).relative_to(repo_dir).as_posix()


def _delete(path: Path) -> int:
    size = path.stat().st_size if path.is_file() and not path.is_symlink() else 0
    path.unlink(missing_ok=True)
    return size


def evict(ck: Checkpoint) -> int:
    """Delete the files lexprobe downloaded for ``ck``'s revision that no other snapshot uses; returns bytes freed.

    The ``refs/`` entry stays (a few bytes), so a later sweep still sees which commit its stored results came from.
    """
    commit = cached_commit(ck)
    if ck.repo is None or commit is None:
        return 0
    repo_dir = repo_folder(ck.cache_dir, ck.repo)
    snapshots = snapshots_folder(ck.cache_dir, ck.repo)
    snap = f"{(snapshots / commit).relative_to(repo_dir).as_posix()}/"
    freed = 0
    with _locked(ck, exclusive=True):
        ledger = _read_ledger(ck)
        blobs = set()
        for rel in sorted(p for p in ledger if p.startswith(snap)):
            if (repo_dir / rel).is_symlink():
                blobs.add(_blob_of(repo_dir / rel, repo_dir))
            freed += _delete(repo_dir / rel)
            ledger.discard(rel)
        linked = {_blob_of(Path(top, f), repo_dir) for top, _, files in os.walk(snapshots)
                  for f in files if Path(top, f).is_symlink()}
        for rel in sorted((blobs & ledger) - linked):
            freed += _delete(repo_dir / rel)
            ledger.discard(rel)
        for top, _, _ in os.walk(repo_dir / snap, topdown=False):
            if not os.listdir(top):
                os.rmdir(top)
        _write_ledger(ck, ledger)
    return freed
