"""lexprobe: how attention heads come to resolve lexical ambiguity across training checkpoints.

The package's face is :class:`lexprobe.Study` (``from lexprobe import Study``): one study's settings, and its five
stages as cached members.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("lexprobe")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

__all__ = ["Study", "__version__"]


def __getattr__(name: str) -> Any:
    """``lexprobe.Study`` imported on first use (``import lexprobe.base.paths`` stays light: no torch)."""
    if name == "Study":
        from lexprobe.study import Study

        return Study
    raise AttributeError(f"module 'lexprobe' has no attribute {name!r}")
