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


class TerminalBar:
    """A tqdm bar driven by ``(done, total)`` calls; silent when tqdm is not installed.

    Args:
        desc: label in front of the bar.
        unit: what is counted (``"frame"``, ``"B"``...).
        unit_scale: show k/M prefixes (for bytes).
    """

    def __init__(self, desc: str = "", unit: str = "it", unit_scale: bool = False):
        self.desc, self.unit, self.unit_scale = desc, unit, unit_scale
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(
                total=total or None,
                unit=self.unit,
                unit_scale=self.unit_scale,
                desc=self.desc,
                file=sys.stderr,
            )
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None
