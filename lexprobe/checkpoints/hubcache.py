"""The Hugging Face hub-cache layout, in one place: where a repo's refs and snapshots lie, and writing checkpoints
into it so they load exactly like hub revisions, offline.

``models--ORG--NAME/snapshots/<40-hex>/<files>`` plus ``refs/stepN`` holding that hash: then
``from_pretrained("ORG/NAME", revision="stepN", cache_dir=..., local_files_only=True)`` resolves the branch. A hub
download also puts the files under ``blobs/`` and links them from the snapshot.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def cache_root(cache_dir: str | Path | None) -> Path:
    """The hub cache folder: ``cache_dir``, or the hub's default (``HF_HUB_CACHE``) when it is None or empty."""
    if not cache_dir:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    return Path(cache_dir)


def repo_folder(cache_dir: str | Path | None, repo: str) -> Path:
    """The cache folder of one repo (in the hub's default cache when ``cache_dir`` is None)."""
    return cache_root(cache_dir) / f"models--{repo.replace('/', '--')}"


def refs_folder(cache_dir: str | Path | None, repo: str) -> Path:
    """The folder of a repo's branch refs (one file per revision, holding its commit)."""
    return repo_folder(cache_dir, repo) / "refs"


def snapshots_folder(cache_dir: str | Path | None, repo: str) -> Path:
    """The folder of a repo's snapshots (one folder per commit)."""
    return repo_folder(cache_dir, repo) / "snapshots"


def read_ref(cache_dir: str | Path | None, repo: str, revision: str) -> str | None:
    """The commit branch ``revision`` of ``repo`` points to in the cache, or None when the cache has no such ref."""
    ref = refs_folder(cache_dir, repo) / revision
    return ref.read_text().strip() if ref.is_file() else None


def add_revision(cache_dir: str | Path, repo: str, revision: str, model: PreTrainedModel,
                 tokenizer: PreTrainedTokenizerBase) -> str:
    """Save ``model`` and ``tokenizer`` as branch ``revision`` of ``repo``; returns the commit hash.

    The commit is a SHA-1 over the saved files, so identical weights give identical commits. Files are staged in
    a temporary folder and moved into place before the ref is written, so an interrupted write leaves no ref.
    """
    if repo.lower().startswith("eleutherai/"):
        raise ValueError(f"refusing to write fake checkpoints under the real repo name {repo!r}")
    base = repo_folder(cache_dir, repo)
    snapshots, refs = snapshots_folder(cache_dir, repo), refs_folder(cache_dir, repo)
    snapshots.mkdir(parents=True, exist_ok=True)
    refs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        stage = Path(tmp) / "files"
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        h = hashlib.sha1()
        for f in sorted(stage.iterdir()):
            h.update(f.name.encode())
            h.update(f.read_bytes())
        commit = h.hexdigest()
        snap = snapshots / commit
        if not snap.exists():
            shutil.move(str(stage), snap)
    (refs / revision).write_text(commit)
    return commit


def has_revision(cache_dir: str | Path, repo: str, revision: str) -> bool:
    """True when ``revision`` of ``repo`` is present (ref and snapshot)."""
    commit = read_ref(cache_dir, repo, revision)
    return commit is not None and (snapshots_folder(cache_dir, repo) / commit).is_dir()
