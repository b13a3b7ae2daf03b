"""Render nodes: face + coefficients -> video frames (IMAGE) + speech + fps, or streamed
straight into an MP4 in ComfyUI's output folder (VIDEO). Both run the pipeline's one frame loop
(``SadTalkerPipeline.iter_frames``), the same as the CLI and the A1111 tab."""

from __future__ import annotations

from ..sadtalker_core.config import PipelineConfig
from ..sadtalker_core.errors import OptionError
from ..sadtalker_core.options import pipeline_config, validate
from ..sadtalker_core.pipeline import estimate_memory
from ..sadtalker_core.types import Coeffs, Face
from . import _host
from ._host import io, ui
from ._inputs import node_inputs, option_input, option_values
from .types import CoeffsType, SadTalkerModels, face_input, models_input

DEFAULT_PREFIX = "sadtalker/SadTalker"


def sockets() -> list[io.Input]:
    """The wired inputs both render nodes share."""
    return [
        models_input(),
        face_input(),
        CoeffsType.Input("coeffs", tooltip="From SadTalker Audio To Coefficients."),
    ]


def render_options() -> list[io.Input]:
    """The option inputs both render nodes share (same names, same widgets)."""
    return [
        option_input(
            "render",
            "batch_size",
            tooltip="Frames rendered per step: more is faster on a GPU with memory to spare; it "
            "is halved automatically when memory runs out. Measured on an H100 at 256 (precision "
            "auto): batch 4 peaks at 2.5 GB, batch 8 at 4.4 GB; in exact fp32 batch 8 made cuDNN "
            "reserve ~33 GB. On a CPU batch 1-2 is fastest.",
        ),
        option_input(
            "render",
            "precision",
            tooltip="auto: tf32 on CUDA; on CPU fp32 (a compiled decoder on AVX-512 CPUs for long "
            "clips). fp32 is exact; tf32 (CUDA) is faster and visually identical; bf16/fp16 are "
            "faster still but approximate.",
        ),
        option_input(
            "run",
            "blend",
            tooltip="How full/extfull modes paste the face into the picture: feather (soft edge, "
            "fast, on the GPU) or poisson (seamless clone like the official code, slow, CPU). "
            "Ignored in other modes.",
        ),
    ]


def run_config(node: type[io.ComfyNode], models: SadTalkerModels, inputs: dict) -> PipelineConfig:
    """The run's config from a node's option inputs; the detector (for the enhancer) is the
    one Load Models chose."""
    values = option_values(node, inputs)
    return pipeline_config({**values, "detector": models.detector})


class SadTalkerRender(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SadTalkerRender",
            display_name="SadTalker Render",
            category="SadTalker",
            description=(
                "Animates the face with the coefficients. Outputs every frame as an IMAGE batch "
                "plus the speech trimmed to the video and the frame rate: connect all three to "
                "Create Video (then Save Video). Memory: the IMAGE batch is float32, frames x "
                "height x width x 12 bytes (60 s at 25 fps: ~4.7 GB at 512x512; full modes use "
                "the source picture's size)."
            ),
            inputs=[
                *sockets(),
                *node_inputs(
                    [
                        *render_options(),
                        io.Boolean.Input(
                            "pad_to_even",
                            default=True,
                            tooltip="Repeat the last row/column when the height or width is odd: "
                            "H.264 video (Create Video / Save Video) needs even sizes.",
                        ),
                    ],
                    ("render", "run"),
                    skip=("crf",),  # no encoding here: Create Video / Save Video encode
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="frames",
                    tooltip="The video frames (full/extfull: pasted into the source picture).",
                ),
                io.Audio.Output(
                    display_name="audio",
                    tooltip="The speech, 16 kHz mono, cut to exactly the video's length.",
                ),
                io.Float.Output(display_name="fps", tooltip="Frames per second of the video."),
            ],
        )

    @classmethod
    def execute(
        cls, models: SadTalkerModels, face: Face, coeffs: Coeffs, pad_to_even: bool, **options
    ) -> io.NodeOutput:
        config = run_config(cls, models, options)
        pipe = models.pipeline
        progress = _host.ProgressCallback()
        with _host.MEMORY.stage(pipe.device, estimate_memory(config, face.size)):
            batches = pipe.iter_frames(
                face,
                coeffs,
                config,
                progress,
                _host.check_interrupted,
                on_batch=progress.on_batch,
            )
            try:
                frames = _host.frames_to_image(batches, coeffs.num_frames, pad_to_even)
            finally:
                _host.release_cache()
        audio = _host.audio_to_comfy(coeffs.audio, coeffs.sample_rate)
        return io.NodeOutput(frames, audio, float(coeffs.fps))


class SadTalkerRenderToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SadTalkerRenderToVideo",
            display_name="SadTalker Render to Video",
            category="SadTalker",
            description=(
                "Animates the face and streams the clip straight into an MP4 (H.264 + AAC, the "
                "speech cut to the frames) in ComfyUI's output folder, batch by batch: memory "
                "stays flat however long the clip, so use it for long speech. Optionally restores "
                "the faces (GFPGAN / RestoreFormer, with an optional upscale model for the "
                "background), exactly as the command line does. Returns a VIDEO (file-backed) "
                "for Save Video (which plays it), Get Video Components or other video nodes. The "
                "node shows the frames as they are rendered: the first batch at once, every few "
                "batches and the last, then plays the MP4. Cancel leaves no file."
            ),
            is_output_node=True,
            inputs=[
                *sockets(),
                *node_inputs(
                    [
                        *render_options(),
                        io.String.Input(
                            "filename_prefix",
                            default=DEFAULT_PREFIX,
                            tooltip="Output file name prefix, relative to ComfyUI's output "
                            "folder (sub-folders allowed); a counter is appended.",
                        ),
                        option_input("run", "crf"),
                        option_input(
                            "enhance",
                            "enhancer",
                            optional=True,
                            tooltip="Restore the faces of every frame before encoding, placed "
                            "from the renderer's head position (as the command line does): "
                            "gfpgan needs GFPGANv1.4.pth, RestoreFormer RestoreFormer.pth in "
                            "models/sadtalker.",
                        ),
                        option_input(
                            "enhance",
                            "upscale",
                            "upscale",
                            optional=True,
                            tooltip="With an enhancer: output size factor (the official "
                            "enhancer: 2).",
                        ),
                        io.UpscaleModel.Input(
                            "upscale_model",
                            optional=True,
                            tooltip="With an enhancer: upscale model (Load Upscale Model, e.g. "
                            "RealESRGAN_x2plus) for the background; unconnected = bicubic.",
                        ),
                    ],
                    ("render", "run", "enhance"),
                    skip=("background_enhancer",),  # the upscale_model socket
                ),
            ],
            outputs=[
                io.Video.Output(
                    display_name="video",
                    tooltip="The written MP4 as a VIDEO (frames are read from the file on demand).",
                )
            ],
        )

    @classmethod
    def execute(
        cls,
        models: SadTalkerModels,
        face: Face,
        coeffs: Coeffs,
        filename_prefix: str,
        upscale_model=None,
        **options,
    ) -> io.NodeOutput:
        pipe = models.pipeline
        config = run_config(cls, models, options)
        if upscale_model is not None:  # the core's rule, named as this node's inputs
            try:
                validate({"background_enhancer": "upscale_model", "enhancer": config.enhance})
            except OptionError as e:
                raise e.named(
                    lambda o: "upscale_model" if o == "background_enhancer" else o
                ) from None
        memory = estimate_memory(config, face.size)
        path, file, subfolder = _host.output_video_path(filename_prefix)
        progress = _host.ProgressCallback()
        with _host.MEMORY.stage(pipe.device, memory):
            try:
                with _host.upscale_model_on(upscale_model, pipe.device) as upscaler:
                    written = pipe.render_to_file(
                        face,
                        coeffs,
                        path,
                        config,
                        lambda _stage, done, total: progress(done, total),
                        _host.check_interrupted,
                        upscaler=upscaler,
                        on_batch=progress.on_batch,
                    )
            finally:
                _host.release_cache()
        return io.NodeOutput(
            _host.video_from_file(written),
            ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]),
        )
