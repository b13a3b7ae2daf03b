"""Enhance stage: face restoration, face-parsing paste masks and background upscaling.

``ENHANCE_FILES`` lists the optional official files this stage uses beyond the restorers; they
belong in ``models.registry.FILES`` (kept here until that table is refactored).
"""

from __future__ import annotations

from ..models import CheckpointFile

ENHANCE_FILES: dict[str, CheckpointFile] = {
    f.name: f
    for f in (
        CheckpointFile(
            "parsing_parsenet.pth",
            "face-parsing mask for pasting restored faces back (optional, used when present)",
            85,
            "https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
            needed_for="enhancer",
            required_keys=("encoder.0.conv2d.weight", "out_mask_conv.conv2d.weight"),
        ),
        CheckpointFile(
            "RealESRGAN_x2plus.pth",
            "Real-ESRGAN x2 background upscaler (optional, --background_enhancer realesrgan)",
            67,
            "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
            needed_for="enhancer",
            required_keys=("conv_first.weight", "body.0.rdb1.conv1.weight"),
        ),
    )
}

__all__ = ["ENHANCE_FILES"]
