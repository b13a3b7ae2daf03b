"""Face renderer of SadTalker: keypoint detector, MappingNet, keypoint motion, SPADE generator;
the stage's entry point is :class:`Renderer` with the networks of :class:`RenderModels`."""

from __future__ import annotations

from .generator import (
    DenseMotion,
    DenseMotionConfig,
    DenseMotionNetwork,
    GeneratorConfig,
    GeneratorOutput,
    OcclusionAwareSPADEGenerator,
)
from .infer import Renderer, RenderModels
from .keypoint import KPDetector, KPDetectorConfig
from .mapping import MappingNet, MappingNetConfig
from .motion import (
    HeadMotion,
    coordinate_grid,
    head_pose_degrees,
    logits_to_degrees,
    rotation_matrix,
    transform_keypoints,
)
from .spade import SPADEDecoderConfig

__all__ = [
    "DenseMotion",
    "DenseMotionConfig",
    "DenseMotionNetwork",
    "GeneratorConfig",
    "GeneratorOutput",
    "HeadMotion",
    "KPDetector",
    "KPDetectorConfig",
    "MappingNet",
    "MappingNetConfig",
    "OcclusionAwareSPADEGenerator",
    "RenderModels",
    "Renderer",
    "SPADEDecoderConfig",
    "coordinate_grid",
    "head_pose_degrees",
    "logits_to_degrees",
    "rotation_matrix",
    "transform_keypoints",
]
