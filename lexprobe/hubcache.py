"""Write checkpoints into a Hugging Face hub-cache layout so they load exactly like hub revisions, offline.

``models--ORG--NAME/snapshots/<40-hex>/<files>`` plus ``refs/stepN`` holding that hash: then
``from_pretrained("ORG/NAME", revision="stepN", cache_dir=..., local_files_only=True)`` resolves the branch.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path


def repo_folder(cache_dir: str | Path, repo: str) -> Path:
    """The cache folder of one repo."""
    return Path(cache_dir) / f"models--{repo.replace('/', '--')}"


def add_revision(cache_dir: str | Path, repo: str, revision: str, model: object, tokenizer: object) -> str:
    """Save ``model`` and ``tokenizer`` as branch ``revision`` of ``repo``; returns the commit hash.

    The commit is a SHA-1 over the saved files, so identical weights give identical commits. Files are staged in
    a temporary folder and moved into place before the ref is written, so an interrupted write leaves no ref.
    """
    if repo.lower().startswith("eleutherai/"):
        raise ValueError(f"refusing to write fake checkpoints under the real repo name {repo!r}")
    base = repo_folder(cache_dir, repo)
    (base / "snapshots").mkdir(parents=True, exist_ok=True)
    (base / "refs").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        stage = Path(tmp) / "files"
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        h = hashlib.sha1()
        for f in sorted(stage.iterdir()):
            h.update(f.name.encode())
            h.update(f.read_bytes())
        commit = h.hexdigest()
        snap = base / "snapshots" / commit
        if not snap.exists():
            shutil.move(str(stage), snap)
    (base / "refs" / revision).write_text(commit)
    return commit


def has_revision(cache_dir: str | Path, repo: str, revision: str) -> bool:
    """True when ``revision`` of ``repo`` is present (ref and snapshot)."""
    ref = repo_folder(cache_dir, repo) / "refs" / revision
    return ref.is_file() and (repo_folder(cache_dir, repo) / "snapshots" / ref.read_text().strip()).is_dir()
