"""Start JupyterLab on the numbered notebooks, offline (``make lab``, or ``python -m lexprobe.lab [jupyter options]``).

The server runs on this interpreter, so notebooks get the project's ``python3`` kernel (``make setup`` installs its
kernelspec into the virtual environment). Nothing reaches the network: update checks and the news feed are off.
Extra arguments go to ``jupyter lab`` unchanged, e.g. ``--port=8899 --no-browser``; as root it adds ``--allow-root``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lexprobe.base.paths import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
# no update check, no news feed, no PyPI extension manager (the environment is pinned by requirements.lock)
OFFLINE = ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly"]


def lab_args(extra: list[str], root: Path = NOTEBOOKS) -> list[str]:
    """``jupyter lab`` arguments: serve ``root`` (unless ``extra`` names a root) offline, then ``extra``."""
    root_ok = ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []  # these machines run as root
    own_root = any(a.startswith(("--ServerApp.root_dir", "--notebook-dir")) for a in extra)
    return [*([] if own_root else [f"--ServerApp.root_dir={root}"]), *OFFLINE, *root_ok, *extra]


def main(argv: list[str] | None = None) -> None:
    from jupyterlab.labapp import LabApp

    LabApp.launch_instance(argv=lab_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
