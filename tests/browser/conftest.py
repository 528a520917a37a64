"""Fixtures: the system Chromium under Playwright, a real JupyterLab server, a folder for screenshots.

Playwright cannot download its own browser here, so it drives Debian's ``chromium`` (``make test`` installs it with
apt-get when run as root). Without it these tests are skipped with the reason, never silently.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .pages import SHOTS

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


def chromium_path() -> str | None:
    """``LEXPROBE_CHROMIUM``, else Debian's ``chromium`` on PATH."""
    return os.environ.get("LEXPROBE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser() -> Iterator:
    exe = chromium_path()
    if exe is None:
        why = "not root, so `make test` could not apt-get it" if os.geteuid() != 0 else \
            "`make test` tried apt-get; see .venv/chromium-install.log"
        pytest.skip(f"browser tests need Debian's chromium, which is not installed ({why}); "
                    "install it with `apt-get install chromium` or set LEXPROBE_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="session")
def shot_dir() -> Path:
    """Where screenshots go: ``LEXPROBE_BROWSER_OUT`` or ``<repo>/build/browser`` (ignored by git)."""
    d = Path(os.environ.get("LEXPROBE_BROWSER_OUT", ROOT / "build" / "browser"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def pytest_terminal_summary(terminalreporter) -> None:
    if SHOTS:
        terminalreporter.section("browser screenshots")
        for p in SHOTS:
            terminalreporter.write_line(str(p))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server started the way ``make lab`` starts it (``python -m lexprobe.lab``), on a copy of
    notebooks/ so that running cells never writes outputs into the repository."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        settings = home / "settings"
        for plugin, values in {"notebook-extension/tracker": {"windowingMode": "none"},  # every cell in the DOM
                               "docmanager-extension/plugin": {"autosave": False},
                               "apputils-extension/notification": {"fetchNews": "false"}}.items():
            f = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(values))
        env = {**os.environ, "LEXPROBE_SMOKE": "1", "JUPYTERLAB_SETTINGS_DIR": str(settings),
               "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
        self.log = home / "server.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lexprobe.lab", f"--ServerApp.root_dir={root}", "--no-browser",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", "--LabApp.expose_app_in_browser=True"],
            env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def api(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/{path}?token={self.token}", timeout=10) as r:
            return json.loads(r.read())

    def wait_ready(self, timeout: float = 90) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                self.api("status")
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def url(self, notebook: str) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{notebook}?reset&token={self.token}"  # reset: no old tabs

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def lab(tmp_path_factory, browser) -> Iterator[Lab]:
    """A running JupyterLab (smoke mode) serving a copy of notebooks/; needs the browser, so skips with it."""
    root = tmp_path_factory.mktemp("notebooks")
    for nb in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    server = Lab(root, tmp_path_factory.mktemp("jupyter"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
