"""Choosing a torch device."""

from __future__ import annotations

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
