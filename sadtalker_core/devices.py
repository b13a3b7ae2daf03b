"""Choosing a torch device and talking to the terminal (shared by the command-line entry points)."""

from __future__ import annotations

import sys

import torch


def auto_device(name: str | torch.device | None = None) -> torch.device:
    """``name`` as a device, or the best available one: CUDA, then Apple MPS, then CPU."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def say(*parts: object, file=None) -> None:
    """Terminal output of the command-line tools (the library itself only logs)."""
    print(*parts, file=file or sys.stdout)  # noqa: T201
