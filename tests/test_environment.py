"""The pinned lock, environment.yml and pyproject ranges agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, ver = line.strip().partition("==")
            assert ver, f"requirements.lock line {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name).lower()] = ver
    return pins


def test_environment_yml_pins_exactly_the_lock():
    env = (ROOT / "environment.yml").read_text()
    pins = {}
    for m in re.finditer(r"^\s+- ([A-Za-z0-9_.\-]+)==(\S+)$", env, re.M):
        pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    assert pins == lock_pins()
    assert "python=3.11" in env


def test_lock_satisfies_pyproject_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock_pins()
    for dep in project["dependencies"]:
        req = Requirement(dep)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is in pyproject.toml but not in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"lock pins {name}=={pins[name]}, outside {req}"
    assert pins["torch"] == "2.13.0"


def test_the_front_door_is_pinned():
    """JupyterLab (``make lab``), the offline chart renderer's anywidget and the browser tests' driver are locked."""
    pins = lock_pins()
    for name in ("jupyterlab", "anywidget", "ipywidgets", "vl-convert-python", "playwright"):
        assert name in pins, f"{name} is missing from requirements.lock"
