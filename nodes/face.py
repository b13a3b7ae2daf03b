"""Face node: source IMAGE -> face crop + 3DMM coefficients (SADTALKER_FACE)."""

from __future__ import annotations

from ..sadtalker_core.config import PREPROCESS_MODES, ExtractConfig, PipelineConfig
from . import _host
from .types import FACE, MODELS, SadTalkerModels

MAX_FACE_INDEX = 64  # widget limit; the core says how many faces the picture really has


class SadTalkerFaceCrop:
    CATEGORY = "SadTalker"
    DESCRIPTION = (
        "Detects the face in the source picture, crops it as SadTalker expects and reconstructs "
        "its 3DMM coefficients. Runs once per picture: changing only motion or render options "
        "reuses this result."
    )
    RETURN_TYPES = (FACE, "IMAGE")
    RETURN_NAMES = ("face", "crop")
    OUTPUT_TOOLTIPS = (
        "The source face: crop, its place in the picture and its 3DMM coefficients.",
        "The face crop the renderer animates (size x size), for preview.",
    )
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "models": (MODELS, {"tooltip": "From SadTalker Load Models."}),
                "image": (
                    "IMAGE",
                    {"tooltip": "Source portrait (the first image of a batch is used)."},
                ),
                "preprocess": (
                    list(PREPROCESS_MODES),
                    {
                        "default": "crop",
                        "tooltip": "crop: the face only; extcrop: a looser crop; resize: the whole "
                        "picture (for head-and-shoulder portraits); full / extfull: animate the "
                        "crop and paste it back into the full picture.",
                    },
                ),
                "face_index": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_FACE_INDEX,
                        "tooltip": "Which face when the picture has several: 0 = the largest.",
                    },
                ),
            }
        }

    def crop(self, models: SadTalkerModels, image, preprocess: str, face_index: int):
        config = ExtractConfig(
            preprocess=preprocess,
            size=models.size,
            detector=models.detector,
            face_index=face_index,
        )
        pipe = models.pipeline
        with _host.MEMORY.stage(pipe.device):
            face = pipe.extract(_host.first_image(image), PipelineConfig(extract=config))
        return (face, _host.uint8_to_image(face.crop[None]))


NODE_CLASS_MAPPINGS = {"SadTalkerFaceCrop": SadTalkerFaceCrop}
NODE_DISPLAY_NAME_MAPPINGS = {"SadTalkerFaceCrop": "SadTalker Face Crop"}
