"""Checkpoint files and loaded networks: the file table (``registry``), where files are
(``locate``), safe reading (``checkpoint``), the one model cache (``cache``) and loading through
it (``loader``), validation (``check``) and downloads (``download``)."""

from __future__ import annotations

from .cache import MODELS, CachedModel, ModelCache, ModelRef
from .check import FileReport, check_weights, runnable_sizes, validate_file
from .loader import (
    LoadedModel,
    NetworkRef,
    clear_cache,
    file_key,
    network_ref,
    open_checkpoint,
    read_state_dict,
)
from .locate import (
    ENV_CHECKPOINTS,
    ENV_DEFAULT_CHECKPOINTS,
    default_checkpoint_dirs,
    find_file,
    network_file,
    require_file,
)
from .registry import (
    FILES,
    LEGACY_SET,
    NETWORKS,
    RELEASE_URL,
    CheckpointFile,
    NetworkSpec,
    mapping_file_for,
)

__all__ = [
    "ENV_CHECKPOINTS",
    "ENV_DEFAULT_CHECKPOINTS",
    "FILES",
    "LEGACY_SET",
    "MODELS",
    "NETWORKS",
    "RELEASE_URL",
    "CachedModel",
    "CheckpointFile",
    "FileReport",
    "LoadedModel",
    "ModelCache",
    "ModelRef",
    "NetworkRef",
    "NetworkSpec",
    "check_weights",
    "clear_cache",
    "default_checkpoint_dirs",
    "file_key",
    "find_file",
    "mapping_file_for",
    "network_file",
    "network_ref",
    "open_checkpoint",
    "read_state_dict",
    "require_file",
    "runnable_sizes",
    "validate_file",
]
