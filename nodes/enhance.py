"""Enhance node: video frames (IMAGE) -> the same frames with every face restored, enlarged.
The frame loop is the enhancer's own (``FaceEnhancer.iter_enhance``): faces are detected in
each frame, since these frames may come from anywhere."""

from __future__ import annotations

from dataclasses import replace

from ..sadtalker_core.enhance.restore import estimate_memory
from ..sadtalker_core.options import stage_config
from . import _host
from ._host import io
from ._inputs import node_inputs, option_input, option_values
from .types import SadTalkerModels, models_input

FRAMES_PER_STEP = 4  # frames converted and enhanced at once (progress and Cancel granularity)


class SadTalkerEnhance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SadTalkerEnhance",
            display_name="SadTalker Enhance Faces",
            category="SadTalker",
            description=(
                "Restores every face of every frame with GFPGAN v1.4 or RestoreFormer (the "
                "official --enhancer), as a batch: faces are found, aligned to 512 px, restored "
                "and blended back into frames enlarged 'upscale' times. Put it between SadTalker "
                "Render and Create Video, or use it on any video frames. Needs GFPGANv1.4.pth or "
                "RestoreFormer.pth in models/sadtalker (or its gfpgan/weights)."
            ),
            inputs=[
                models_input(),
                io.Image.Input("frames", tooltip="Video frames, e.g. from SadTalker Render."),
                *node_inputs(
                    [
                        option_input(
                            "enhance",
                            "enhancer",
                            stage_default=True,
                            tooltip="gfpgan: GFPGANv1.4.pth (sharper, the usual choice); "
                            "RestoreFormer: RestoreFormer.pth (more faithful identity, slower).",
                        ),
                        option_input(
                            "enhance",
                            "upscale",
                            "upscale",
                            tooltip="Output size factor (the official enhancer: 2). A 256 px face "
                            "needs 2 to show the restored 512 px detail. Memory of the output "
                            "IMAGE grows with its square.",
                        ),
                        option_input(
                            "enhance",
                            "batch_size",
                            "batch_size",
                            tooltip="Faces restored per network call: more is faster on a GPU "
                            "with memory to spare.",
                        ),
                        io.UpscaleModel.Input(
                            "upscale_model",
                            optional=True,
                            tooltip="Upscale model (Load Upscale Model: Real-ESRGAN or any "
                            "spandrel upscaler) for the background outside the faces; "
                            "unconnected = bicubic.",
                        ),
                    ],
                    ("enhance",),
                    skip=("background_enhancer",),  # the upscale_model socket
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="frames",
                    tooltip="The frames with restored faces, upscale times larger.",
                )
            ],
        )

    @classmethod
    def execute(
        cls, models: SadTalkerModels, frames, upscale_model=None, **options
    ) -> io.NodeOutput:
        pipe = models.pipeline
        values = option_values(cls, options)
        config = replace(stage_config("enhance", values), detector=models.detector)
        total = frames.shape[0]
        progress = _host.ProgressCallback()
        chunks = (
            _host.image_to_uint8(frames[start : start + FRAMES_PER_STEP])
            for start in range(0, total, FRAMES_PER_STEP)
        )
        with _host.MEMORY.stage(pipe.device, estimate_memory(config.batch_size)):
            try:
                with _host.upscale_model_on(upscale_model, pipe.device) as upscaler:
                    enhanced = pipe.enhancer(config, upscaler).iter_enhance(
                        chunks, total, progress, _host.check_interrupted, progress.on_batch
                    )
                    out = _host.frames_to_image(enhanced, total, pad_to_even=True)
            finally:
                _host.release_cache()
        return io.NodeOutput(out)
