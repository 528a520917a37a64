"""lexprobe: how attention heads come to resolve lexical ambiguity across training checkpoints."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lexprobe")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"
