"""Which code runs: a hash of a lexprobe module's source and of every lexprobe module it imports. The stage cache
keys finished stages on it, and :mod:`lexprobe.live` the attention maps it keeps, so that changed code is never
answered from what older code computed."""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from lexprobe.base.paths import REPO_ROOT


@functools.cache
def code_fingerprint(module: str) -> str:
    """Hash of the source of ``module`` and of every lexprobe module it imports, directly or not (static imports,
    function-level ones included, with their packages' ``__init__``), read once per process: the code running,
    even if its files are edited meanwhile."""
    files = sorted(code_files(module))
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(REPO_ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _source(name: str) -> Path | None:
    """The file of a lexprobe module or package, or None (a name that is neither, e.g. an imported class)."""
    base = REPO_ROOT / Path(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def code_files(module: str) -> set[Path]:
    """The source files of ``module`` and of the lexprobe modules it imports, transitively, with the ``__init__`` of
    each package on the way (hashed, not followed: a package's registry does not make every sibling an input)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        seen |= {f for f in (_source(".".join(parts[:i])) for i in range(1, len(parts)))
                 if f is not None and f.name == "__init__.py"}
        f = _source(name)
        if f is None or f in seen:
            continue
        seen.add(f)
        todo += _imports(f, name if f.name == "__init__.py" else name.rpartition(".")[0])
    return seen


@functools.cache
def _imports(f: Path, package: str) -> list[str]:
    """The lexprobe names a source file imports (modules, and ``module.name`` for names that may be modules),
    parsed once per process: every stage's fingerprint walks the same files."""
    names: list[str] = []
    for node in ast.walk(ast.parse(f.read_bytes())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.startswith("lexprobe")]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], mod]).strip(".")
            if mod.startswith("lexprobe"):
                names += [mod, *(f"{mod}.{a.name}" for a in node.names)]
    return names
