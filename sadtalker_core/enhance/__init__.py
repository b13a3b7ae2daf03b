"""Enhance stage: face restoration (GFPGAN / RestoreFormer) pasted back through the face-parsing
mask, and background upscaling with any spandrel upscaler (Real-ESRGAN); the entry point is
:class:`FaceEnhancer`.

Its optional files (``parsing_parsenet.pth``, ``RealESRGAN_x2plus.pth``) are in
``models.registry.FILES`` like every other official file.
"""

from __future__ import annotations

from .restore import FaceEnhancer, estimate_memory
from .upscale import BackgroundUpscaler

__all__ = ["BackgroundUpscaler", "FaceEnhancer", "estimate_memory"]
