"""Render nodes: face + coefficients -> video frames (IMAGE) + speech + fps, or streamed
straight into an MP4 in ComfyUI's output folder (VIDEO)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from ..sadtalker_core.config import (
    BLENDS,
    ENHANCER_NAMES,
    PRECISIONS,
    EnhanceConfig,
    PipelineConfig,
    RenderConfig,
)
from ..sadtalker_core.enhance.restore import FaceEnhancer
from ..sadtalker_core.enhance.restore import estimate_memory as enhance_memory
from ..sadtalker_core.io.video import VideoWriter
from ..sadtalker_core.render.infer import estimate_memory
from ..sadtalker_core.types import Coeffs, Face
from . import _host
from .types import COEFFS, FACE, MODELS, SadTalkerModels

MAX_BATCH = 64  # frames per generator call the widget allows (out of memory halves it anyway)
NO_ENHANCER = "none"
DEFAULT_PREFIX = "sadtalker/SadTalker"


def with_previews(batches: Iterable[np.ndarray], progress: _host.ProgressCallback) -> Iterator:
    """Pass the batches on, sending a live preview frame every few batches."""
    for batch in batches:
        progress.preview(batch)
        yield batch


def render_inputs() -> dict:
    """The inputs both render nodes share (same names, same widgets)."""
    return {
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
    }


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
                **render_inputs(),
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
        progress = _host.ProgressCallback()
        with _host.MEMORY.stage(pipe.device, estimate_memory(face.size, batch_size)):
            batches = pipe.iter_frames(
                face, coeffs, config, progress=progress, should_cancel=_host.check_interrupted
            )
            try:
                frames = _host.frames_to_image(
                    with_previews(batches, progress), coeffs.num_frames, pad_to_even
                )
            finally:
                _host.release_cache()
        audio = _host.audio_to_comfy(coeffs.audio, coeffs.sample_rate)
        return (frames, audio, float(coeffs.fps))


class SadTalkerRenderToVideo:
    CATEGORY = "SadTalker"
    DESCRIPTION = (
        "Animates the face and streams the clip straight into an MP4 (H.264 + AAC, the speech "
        "cut to the frames) in ComfyUI's output folder, batch by batch: memory stays flat "
        "however long the clip, so use it for long speech. Optionally restores the faces "
        "(GFPGAN / RestoreFormer, with an optional upscale model for the background). Returns "
        "a VIDEO (file-backed) for Save Video, Get Video Components or other video nodes, and "
        "shows the video in the node. Cancel leaves no file."
    )
    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("The written MP4 as a VIDEO (frames are read from the file on demand).",)
    OUTPUT_NODE = True
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        defaults = EnhanceConfig()
        return {
            "required": {
                **render_inputs(),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": DEFAULT_PREFIX,
                        "tooltip": "Output file name prefix, relative to ComfyUI's output "
                        "folder (sub-folders allowed); a counter is appended.",
                    },
                ),
                "crf": (
                    "INT",
                    {
                        "default": PipelineConfig().crf,
                        "min": 0,
                        "max": 51,
                        "tooltip": "H.264 quality: 0 lossless .. 51 worst; 18 is visually "
                        "lossless.",
                    },
                ),
            },
            "optional": {
                "enhancer": (
                    [NO_ENHANCER, *ENHANCER_NAMES],
                    {
                        "default": NO_ENHANCER,
                        "tooltip": "Restore the faces of every frame before encoding (as "
                        "SadTalker Enhance Faces): gfpgan needs GFPGANv1.4.pth, RestoreFormer "
                        "RestoreFormer.pth in models/sadtalker.",
                    },
                ),
                "upscale": (
                    "INT",
                    {
                        "default": defaults.upscale,
                        "min": 1,
                        "max": 4,
                        "tooltip": "With an enhancer: output size factor (the official "
                        "enhancer: 2).",
                    },
                ),
                "upscale_model": (
                    "UPSCALE_MODEL",
                    {
                        "tooltip": "With an enhancer: upscale model (Load Upscale Model, e.g. "
                        "RealESRGAN_x2plus) for the background; unconnected = bicubic.",
                    },
                ),
            },
        }

    def render(
        self,
        models: SadTalkerModels,
        face: Face,
        coeffs: Coeffs,
        batch_size: int,
        precision: str,
        blend: str,
        filename_prefix: str,
        crf: int,
        enhancer: str = NO_ENHANCER,
        upscale: int = 2,
        upscale_model=None,
    ):
        pipe = models.pipeline
        config = PipelineConfig(
            render=RenderConfig(batch_size=batch_size, precision=precision), blend=blend
        )
        enhance = None
        memory = estimate_memory(face.size, batch_size)
        if enhancer != NO_ENHANCER:
            enhance = EnhanceConfig(enhancer, upscale, models.detector)
            memory += enhance_memory(enhance.batch_size)
        path, file, subfolder = _host.output_video_path(filename_prefix)
        progress = _host.ProgressCallback()
        with _host.MEMORY.stage(pipe.device, memory):
            try:
                restorer = make_enhancer(pipe, enhance, upscale_model)
                batches = pipe.iter_frames(
                    face, coeffs, config, progress=progress, should_cancel=_host.check_interrupted
                )
                with VideoWriter(
                    path,
                    fps=coeffs.fps,
                    audio=coeffs.audio,
                    sample_rate=coeffs.sample_rate,
                    crf=crf,
                ) as writer:
                    for batch in batches:
                        if restorer is not None:
                            batch = restorer.enhance(batch)
                        progress.preview(batch)
                        writer.write(batch)
            finally:
                _host.release_upscale_model(upscale_model)
                _host.release_cache()
        return {
            "ui": _host.video_ui(file, subfolder),
            "result": (_host.video_from_file(writer.path),),
        }


def make_enhancer(pipe, config: EnhanceConfig | None, upscale_model=None):
    """The face enhancer of ``config`` (None: no enhancement); with a ComfyUI upscale model
    (spandrel) as the background upscaler."""
    if config is None:
        return None
    if upscale_model is None:
        return pipe.enhancer(config)
    return FaceEnhancer(pipe.dirs, pipe.device, config, background=upscale_model)


NODE_CLASS_MAPPINGS = {
    "SadTalkerRender": SadTalkerRender,
    "SadTalkerRenderToVideo": SadTalkerRenderToVideo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SadTalkerRender": "SadTalker Render",
    "SadTalkerRenderToVideo": "SadTalker Render to Video",
}
