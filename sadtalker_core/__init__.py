"""SadTalker talking-head generation as a host-independent PyTorch library."""

from __future__ import annotations

from .errors import (
    CancelledError,
    InvalidAudioError,
    InvalidImageError,
    MissingDependencyError,
    ModelNotFoundError,
    NoFaceDetectedError,
    SadTalkerError,
    ShapeError,
    UnsupportedCheckpointError,
)
from .models.registry import (
    FILES,
    NETWORKS,
    CheckpointFile,
    LoadedModel,
    check_weights,
    clear_cache,
    default_checkpoint_dirs,
    find_file,
    load_network,
    require_file,
)

__version__ = "0.1.0"

__all__ = [
    "FILES",
    "NETWORKS",
    "CancelledError",
    "CheckpointFile",
    "InvalidAudioError",
    "InvalidImageError",
    "LoadedModel",
    "MissingDependencyError",
    "ModelNotFoundError",
    "NoFaceDetectedError",
    "SadTalkerError",
    "ShapeError",
    "UnsupportedCheckpointError",
    "__version__",
    "check_weights",
    "clear_cache",
    "default_checkpoint_dirs",
    "find_file",
    "load_network",
    "require_file",
]
