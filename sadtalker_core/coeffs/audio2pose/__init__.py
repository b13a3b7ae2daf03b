"""Audio->head-pose stage (PoseVAE) of SadTalker: CVAE network, chunked inference, smoothing."""

from __future__ import annotations

from .cvae import Audio2PoseConfig, Audio2PoseNet
from .infer import (
    latents_from_seed,
    num_latents,
    predict_pose,
    predict_pose_motion,
    smooth_pose,
)

__all__ = [
    "Audio2PoseConfig",
    "Audio2PoseNet",
    "latents_from_seed",
    "num_latents",
    "predict_pose",
    "predict_pose_motion",
    "smooth_pose",
]
