"""Face node: source IMAGE -> face crop + 3DMM coefficients (SADTALKER_FACE)."""

from __future__ import annotations

from ..sadtalker_core.config import PipelineConfig
from ..sadtalker_core.options import stage_config
from . import _host
from ._host import io
from ._inputs import node_inputs, option_input, option_values
from .types import FaceType, SadTalkerModels, models_input


class SadTalkerFaceCrop(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SadTalkerFaceCrop",
            display_name="SadTalker Face Crop",
            category="SadTalker",
            description=(
                "Detects the face in the source picture, crops it as SadTalker expects and "
                "reconstructs its 3DMM coefficients. Runs once per picture: changing only motion "
                "or render options reuses this result."
            ),
            inputs=[
                models_input(),
                io.Image.Input(
                    "image", tooltip="Source portrait (the first image of a batch is used)."
                ),
                *node_inputs(
                    [
                        option_input(
                            "extract",
                            "preprocess",
                            tooltip="crop: the face only; extcrop: a looser crop; resize: the "
                            "whole picture (for head-and-shoulder portraits); full / extfull: "
                            "animate the crop and paste it back into the full picture.",
                        ),
                        option_input("extract", "face_index"),
                    ],
                    ("extract",),
                    skip=("size", "detector"),  # chosen once, on Load Models
                ),
            ],
            outputs=[
                FaceType.Output(
                    display_name="face",
                    tooltip="The source face: crop, its place in the picture and its 3DMM "
                    "coefficients.",
                ),
                io.Image.Output(
                    display_name="crop",
                    tooltip="The face crop the renderer animates (size x size), for preview.",
                ),
            ],
        )

    @classmethod
    def execute(cls, models: SadTalkerModels, image, **options) -> io.NodeOutput:
        values = option_values(cls, options)
        config = stage_config(
            "extract", {**values, "size": models.size, "detector": models.detector}
        )
        pipe = models.pipeline
        with _host.MEMORY.stage(pipe.device):
            face = pipe.extract(_host.first_image(image), PipelineConfig(extract=config))
        return io.NodeOutput(face, _host.uint8_to_image(face.crop[None]))
