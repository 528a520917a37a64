"""Where and in which precision checkpoints run: ``--device auto|cpu|cuda`` and ``--dtype float32|bfloat16``."""

from __future__ import annotations

from lexprobe.base.lazy import torch

DTYPES = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a ``--dtype`` name."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from {sorted(DTYPES)}")
    return getattr(torch, name)


def resolve_device(name: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose from {DEVICES}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA GPU here (use auto or cpu)")
    return name
