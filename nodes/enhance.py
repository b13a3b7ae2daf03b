"""Enhance node: video frames (IMAGE) -> the same frames with every face restored, enlarged."""

from __future__ import annotations

from ..sadtalker_core.config import ENHANCER_NAMES, EnhanceConfig
from ..sadtalker_core.enhance.restore import FaceEnhancer, estimate_memory
from . import _host
from .types import MODELS, SadTalkerModels

FRAMES_PER_STEP = 4  # frames sent to the enhancer at once (progress and Cancel granularity)


class SadTalkerEnhance:
    CATEGORY = "SadTalker"
    DESCRIPTION = (
        "Restores every face of every frame with GFPGAN v1.4 or RestoreFormer (the official "
        "--enhancer), as a batch: faces are found, aligned to 512 px, restored and blended back "
        "into frames enlarged 'upscale' times. Put it between SadTalker Render and Create Video. "
        "Needs GFPGANv1.4.pth or RestoreFormer.pth in models/sadtalker (or its gfpgan/weights)."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The frames with restored faces, upscale times larger.",)
    FUNCTION = "enhance"

    @classmethod
    def INPUT_TYPES(cls):
        defaults = EnhanceConfig()
        return {
            "required": {
                "models": (
                    MODELS,
                    {"tooltip": "From SadTalker Load Models (folders, device, face detector)."},
                ),
                "frames": ("IMAGE", {"tooltip": "Video frames, e.g. from SadTalker Render."}),
                "enhancer": (
                    list(ENHANCER_NAMES),
                    {
                        "default": defaults.enhancer,
                        "tooltip": "gfpgan: GFPGANv1.4.pth (sharper, the usual choice); "
                        "RestoreFormer: RestoreFormer.pth (more faithful identity, slower).",
                    },
                ),
                "upscale": (
                    "INT",
                    {
                        "default": defaults.upscale,
                        "min": 1,
                        "max": 4,
                        "tooltip": "Output size factor (the official enhancer: 2). A 256 px "
                        "face needs 2 to show the restored 512 px detail. Memory of the output "
                        "IMAGE grows with its square.",
                    },
                ),
                "batch_size": (
                    "INT",
                    {
                        "default": defaults.batch_size,
                        "min": 1,
                        "max": 64,
                        "tooltip": "Faces restored per network call: more is faster on a GPU "
                        "with memory to spare.",
                    },
                ),
            },
            "optional": {
                "upscale_model": (
                    "UPSCALE_MODEL",
                    {
                        "tooltip": "Upscale model (Load Upscale Model: Real-ESRGAN or any "
                        "spandrel upscaler) for the background outside the faces; unconnected "
                        "= bicubic.",
                    },
                ),
            },
        }

    def enhance(
        self,
        models: SadTalkerModels,
        frames,
        enhancer: str,
        upscale: int,
        batch_size: int,
        upscale_model=None,
    ):
        pipe = models.pipeline
        config = EnhanceConfig(enhancer, upscale, models.detector, batch_size)
        total = frames.shape[0]
        progress = _host.ProgressCallback()

        with _host.MEMORY.stage(pipe.device, estimate_memory(batch_size)):
            if upscale_model is None:
                face_enhancer = pipe.enhancer(config)
            else:
                face_enhancer = FaceEnhancer(pipe.dirs, pipe.device, config, upscale_model)

            def batches():
                for start in range(0, total, FRAMES_PER_STEP):
                    _host.check_interrupted()
                    chunk = _host.image_to_uint8(frames[start : start + FRAMES_PER_STEP])
                    out = face_enhancer.enhance(chunk)
                    progress(min(start + FRAMES_PER_STEP, total), total)
                    progress.preview(out)
                    yield out

            try:
                return (_host.frames_to_image(batches(), total, pad_to_even=True),)
            finally:
                _host.release_upscale_model(upscale_model)
                _host.release_cache()


NODE_CLASS_MAPPINGS = {"SadTalkerEnhance": SadTalkerEnhance}
NODE_DISPLAY_NAME_MAPPINGS = {"SadTalkerEnhance": "SadTalker Enhance Faces"}
