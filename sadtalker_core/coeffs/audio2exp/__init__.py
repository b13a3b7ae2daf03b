"""Audio->expression stage (ExpNet) of SadTalker: network and inference."""

from __future__ import annotations

from .infer import predict_expression
from .net import Audio2ExpConfig, Audio2ExpNet, ConvBNReLU, build_mel_encoder

__all__ = [
    "Audio2ExpConfig",
    "Audio2ExpNet",
    "ConvBNReLU",
    "build_mel_encoder",
    "predict_expression",
]
