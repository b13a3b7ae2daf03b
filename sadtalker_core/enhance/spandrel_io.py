"""Loading a network file through spandrel (the enhancer's restorers and upscalers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import MissingDependencyError, UnsupportedCheckpointError
from ..models import FILES, read_state_dict


def download_hint(path: Path) -> str:
    """`` Download <name> from <url>.`` for an official file name, else ''."""
    spec = FILES.get(path.name)
    return f" {spec.download_hint}." if spec else ""


def load_descriptor(path: str | os.PathLike, device: str | torch.device, what: str) -> Any:
    """The spandrel model descriptor of a file read safely (``weights_only``), on ``device``.

    Args:
        what: the feature that needs it, for messages ("The background upscaler").

    Raises:
        MissingDependencyError: spandrel is not installed.
        UnsupportedCheckpointError: spandrel does not know the network in the file.
    """
    path = Path(path)
    try:
        from spandrel import ModelLoader
    except ImportError as e:
        raise MissingDependencyError("spandrel", what) from e
    sd = read_state_dict(path)
    try:
        return ModelLoader(torch.device(device)).load_from_state_dict(sd)
    except Exception as e:  # spandrel raises several types for unknown/mismatched state dicts
        raise UnsupportedCheckpointError(
            f"{path} holds no network spandrel can load for {what.lower()} "
            f"({str(e).splitlines()[0]}).{download_hint(path)}"
        ) from e
