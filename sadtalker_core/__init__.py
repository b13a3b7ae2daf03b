"""SadTalker talking-head generation as a host-independent PyTorch library.

from sadtalker_core import PipelineConfig, SadTalkerPipeline

pipe = SadTalkerPipeline()          # networks load once, on first use
pipe.run("photo.png", "speech.wav", "out.mp4", PipelineConfig())
"""

from __future__ import annotations

from .config import (
    BLENDS,
    COMPILE_MODES,
    DETECTORS,
    ENHANCER_NAMES,
    FIELD_HELP,
    PRECISIONS,
    PREPROCESS_MODES,
    CoeffConfig,
    EnhanceConfig,
    ExtractConfig,
    PipelineConfig,
    RenderConfig,
)
from .errors import (
    CancelledError,
    DownloadError,
    InvalidAudioError,
    InvalidImageError,
    InvalidVideoError,
    MissingDependencyError,
    ModelNotFoundError,
    NoFaceDetectedError,
    OptionError,
    SadTalkerError,
    ShapeError,
    UnsupportedCheckpointError,
)
from .io.inputs import check_inputs
from .models import check_weights, default_checkpoint_dirs
from .models.download import download_weights, files_for
from .pipeline import SadTalkerPipeline
from .types import Coeffs, Face

__version__ = "0.1.0"

__all__ = [
    "BLENDS",
    "COMPILE_MODES",
    "DETECTORS",
    "ENHANCER_NAMES",
    "FIELD_HELP",
    "PRECISIONS",
    "PREPROCESS_MODES",
    "DownloadError",
    "download_weights",
    "files_for",
    "CancelledError",
    "CoeffConfig",
    "Coeffs",
    "EnhanceConfig",
    "ExtractConfig",
    "Face",
    "InvalidAudioError",
    "InvalidImageError",
    "InvalidVideoError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "NoFaceDetectedError",
    "OptionError",
    "PipelineConfig",
    "RenderConfig",
    "SadTalkerError",
    "SadTalkerPipeline",
    "ShapeError",
    "UnsupportedCheckpointError",
    "__version__",
    "check_inputs",
    "check_weights",
    "default_checkpoint_dirs",
]
