"""Render node: face + coefficients -> video frames (IMAGE), the speech (AUDIO) and the fps."""

from __future__ import annotations

from ..sadtalker_core.config import BLENDS, PRECISIONS, PipelineConfig, RenderConfig
from ..sadtalker_core.render.infer import estimate_memory
from ..sadtalker_core.types import Coeffs, Face
from . import _host
from .types import COEFFS, FACE, MODELS, SadTalkerModels

MAX_BATCH = 64  # frames per generator call the widget allows (out of memory halves it anyway)


class SadTalkerRender:
    CATEGORY = "SadTalker"
    DESCRIPTION = (
        "Animates the face with the coefficients. Outputs every frame as an IMAGE batch plus "
        "the speech trimmed to the video and the frame rate: connect all three to Create Video "
        "(then Save Video). Memory: the IMAGE batch is float32, frames x height x width x 12 "
        "bytes (60 s at 25 fps: ~4.7 GB at 512x512; full modes use the source picture's size)."
    )
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("frames", "audio", "fps")
    OUTPUT_TOOLTIPS = (
        "The video frames (full/extfull: pasted into the source picture).",
        "The speech, 16 kHz mono, cut to exactly the video's length.",
        "Frames per second of the video.",
    )
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "models": (MODELS, {"tooltip": "From SadTalker Load Models."}),
                "face": (FACE, {"tooltip": "From SadTalker Face Crop."}),
                "coeffs": (COEFFS, {"tooltip": "From SadTalker Audio To Coefficients."}),
                "batch_size": (
                    "INT",
                    {
                        "default": RenderConfig().batch_size,
                        "min": 1,
                        "max": MAX_BATCH,
                        "tooltip": "Frames rendered per step: more is faster on a GPU with "
                        "memory to spare; it is halved automatically when memory runs out. "
                        "Measured on an H100 at 256 (precision auto): batch 4 peaks at 2.5 GB, "
                        "batch 8 at 4.4 GB; in exact fp32 batch 8 made cuDNN reserve ~33 GB. "
                        "On a CPU batch 1-2 is fastest.",
                    },
                ),
                "precision": (
                    list(PRECISIONS),
                    {
                        "default": "auto",
                        "tooltip": "auto: tf32 on CUDA; on CPU fp32 with Winograd convolutions "
                        "where they are faster (AVX2 CPUs). fp32 is exact; tf32 (CUDA) is "
                        "faster and visually identical; bf16/fp16 are faster still but "
                        "approximate.",
                    },
                ),
                "blend": (
                    list(BLENDS),
                    {
                        "default": BLENDS[0],
                        "tooltip": "How full/extfull modes paste the face into the picture: "
                        "feather (soft edge, fast, on the GPU) or poisson (seamless clone like "
                        "the official code, slow, CPU). Ignored in other modes.",
                    },
                ),
                "pad_to_even": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Repeat the last row/column when the height or width is odd: "
                        "H.264 video (Create Video / Save Video) needs even sizes.",
                    },
                ),
            }
        }

    def render(
        self,
        models: SadTalkerModels,
        face: Face,
        coeffs: Coeffs,
        batch_size: int,
        precision: str,
        blend: str,
        pad_to_even: bool,
    ):
        config = PipelineConfig(
            render=RenderConfig(batch_size=batch_size, precision=precision), blend=blend
        )
        pipe = models.pipeline
        _host.make_room(estimate_memory(face.size, batch_size), pipe.device)
        batches = pipe.iter_frames(
            face,
            coeffs,
            config,
            progress=_host.ProgressCallback(),
            should_cancel=_host.check_interrupted,
        )
        try:
            frames = _host.frames_to_image(batches, coeffs.num_frames, pad_to_even)
        finally:
            _host.release_cache()
        audio = _host.audio_to_comfy(coeffs.audio, coeffs.sample_rate)
        return (frames, audio, float(coeffs.fps))


NODE_CLASS_MAPPINGS = {"SadTalkerRender": SadTalkerRender}
NODE_DISPLAY_NAME_MAPPINGS = {"SadTalkerRender": "SadTalker Render"}
