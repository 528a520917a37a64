"""``make lab`` really opens JupyterLab on notebooks/ with the project's python3 kernel (no browser needed)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _api(port: int, token: str, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/{path}?token={token}", method=method,
                                 data=b"{}" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else {}


async def _run(url: str, code: str) -> str:
    """Execute code in a running kernel through the server's websocket, as JupyterLab does; return its stdout."""
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(url)
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
              "version": "5.3", "date": ""}
    await ws.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "channel": "shell",
                                       "content": {"code": code, "silent": False, "store_history": False,
                                                   "user_expressions": {}, "allow_stdin": False}}))
    out = []
    while True:
        msg = json.loads(await asyncio.wait_for(ws.read_message(), timeout=60))
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            raise AssertionError(f"kernel error: {msg['content']['ename']}: {msg['content']['evalue']}")
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            ws.close()
            return "".join(out)


@pytest.mark.skipif(shutil.which("make") is None, reason="`make lab` needs GNU make, which is not on PATH")
def test_make_lab_serves_the_notebooks_with_the_project_kernel(tmp_path):
    from browser.conftest import _free_port  # the browser tests' helper; importing it needs no browser

    port, token = _free_port(), secrets.token_hex(16)
    args = f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.port_retries=0 " \
           f"--IdentityProvider.token={token}"
    env = {**os.environ, "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    # -o setup: use this interpreter's environment as it is (CI has just set it up); the target itself is unchanged
    proc = subprocess.Popen(["make", "-s", "-o", "setup", "lab", f"VENV={sys.prefix}", f"LAB_ARGS={args}"],
                            cwd=ROOT, env=env, stdout=(tmp_path / "lab.log").open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        for _ in range(180):
            if proc.poll() is not None:
                pytest.fail(f"make lab exited with {proc.returncode}:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
            try:
                listing = _api(port, token, "contents")
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"make lab did not answer in 90 s:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
        served = {f["name"] for f in listing["content"]}
        assert {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} <= served
        specs = _api(port, token, "kernelspecs")
        assert specs["default"] == "python3"
        kernel_python = Path(specs["kernelspecs"]["python3"]["spec"]["argv"][0])
        assert kernel_python.parent == Path(sys.executable).parent, f"python3 kernel runs {kernel_python}"
        kernel = _api(port, token, "kernels", "POST")
        ws = f"ws://127.0.0.1:{port}/api/kernels/{kernel['id']}/channels?token={token}"
        with ThreadPoolExecutor(1) as pool:  # own thread: Playwright's sync API may hold this thread's event loop
            printed = pool.submit(asyncio.run, _run(ws, "import sys; print(sys.prefix)")).result()
        assert printed.strip() == sys.prefix
        _api(port, token, f"kernels/{kernel['id']}", "DELETE")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
