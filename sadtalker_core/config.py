"""Every stage's options: the config dataclasses, their allowed values and a one-line help text
per field, which the CLI, the ComfyUI nodes and the A1111 tab all read."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PREPROCESS_MODES = ("crop", "extcrop", "resize", "full", "extfull")
SIZES = (256, 512)
AUTO = "auto"  # detector name: the first of DETECTORS that can be built here
DETECTORS: tuple[str, ...] = ("official", "face_alignment", "dlib")
NUM_POSE_STYLES = 46  # rows of the PoseVAE class-bias table: pose_style is 0..45
PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
COMPILE_MODES = ("auto", "on", "off")  # torch.compile of the SPADE decoder (render/compiled.py)
BLENDS = ("feather", "poisson")  # paste-back of the full modes
ENHANCER_NAMES = ("gfpgan", "RestoreFormer")  # the official --enhancer values
UPSCALES = (1, 2, 3, 4)  # enhancer output scale factors
BACKGROUND_TILE, BACKGROUND_TILE_PAD = 400, 10  # official RealESRGANer(tile=400, tile_pad=10)


@dataclass(frozen=True)
class ExtractConfig:
    """Options of the extract stage (defaults = the official CLI's)."""

    preprocess: str = "crop"  # crop | extcrop | resize | full | extfull (see README)
    size: int = 256  # render resolution the crop is made for: 256 or 512 px
    detector: str = "auto"  # face detector backend: auto | official | face_alignment | dlib
    face_index: int = 0  # which face when several are found, 0 = the largest
    min_image_side: int = 64  # smaller pictures are refused, px
    min_face_side: int = 32  # smaller detected faces are refused, px (at full resolution)
    max_detect_side: int = 1280  # detection runs on a copy at most this large, px
    max_track_shift: float = 0.5  # re-detected face: centre within this x face size of expected

    def __post_init__(self):
        _check(self)


@dataclass(frozen=True)
class CoeffConfig:
    """Options of the coefficient stage; defaults reproduce the official CLI defaults.

    Change with ``dataclasses.replace``. Sequences given as lists are stored as tuples.
    """

    seed: int = 0  # seeds the blink schedule and the PoseVAE latents; official: unseeded
    pose_style: int = 0  # PoseVAE head-motion style class, 0..45
    # Scales the predicted expression around the source's own: 1 = as predicted, 0 = the source
    # expression, >1 exaggerates. The official code multiplies the absolute coefficients (0 =
    # the 3DMM mean face), which also scales the source's resting expression; equal at 1.
    expression_scale: float = 1.0  # multiplier on expression motion; 1.0 = as trained
    head_motion_scale: float = 1.0  # multiplier on head motion around the source pose (new)
    still: bool = False  # keep the source head pose for every frame (blinks still happen)
    blink: bool = True  # add the random eye-blink schedule
    fps: float = 25.0  # output frames per second; the networks run at 25 and are resampled
    input_yaw: tuple[float, ...] | None = None  # degrees; keypoints the renderer's yaw follows
    input_pitch: tuple[float, ...] | None = None  # degrees; like input_yaw, for pitch
    input_roll: tuple[float, ...] | None = None  # degrees; like input_yaw, for roll
    idle_seconds: float | None = None  # seconds of idle motion (no speech); audio is not used
    chunk_frames: int = 256  # frames per network pass; memory/speed only

    def __post_init__(self):
        object.__setattr__(self, "fps", float(self.fps))
        if self.idle_seconds is not None:
            object.__setattr__(self, "idle_seconds", float(self.idle_seconds))
        _check(self)  # also: angle lists become tuples of floats
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}.")

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict of the fields (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True)
class RenderConfig:
    """Options of the render stage."""

    # frames per generator call; 1-2 is fastest on CPU. On an H100 at 256 (auto = tf32) batch 4
    # peaks at 2.5 GB and batch 8 at 4.4 GB; in exact fp32 cuDNN picked a ~33 GB-workspace
    # algorithm at batch 8.
    batch_size: int = 2
    # auto: tf32 on CUDA; fp32 on CPU with Winograd convolutions where they pay (conv.py).
    # fp32: exact (direct convolutions, TF32 off). tf32 (CUDA), bf16, fp16: faster, approximate.
    precision: str = "auto"
    # auto: compile the decoder (torch.compile) on AVX-512 CPUs for clips of 250+ frames, where
    # frames rendered 1.04-1.08x faster after a 15-25 s compilation; on: always; off: never.
    # Exact fp32 renders are never compiled.
    compile: str = "auto"

    def __post_init__(self):
        _check(self)


@dataclass(frozen=True)
class EnhanceConfig:
    """Options of the enhance stage."""

    enhancer: str = "gfpgan"  # gfpgan (GFPGAN v1.4) | RestoreFormer
    upscale: int = 2  # output frames are this many times larger (the official enhancer: 2)
    detector: str = "auto"  # finder for frames without landmarks: auto|official|face_alignment|dlib
    batch_size: int = 4  # faces per restoration / parsing call
    min_eye_distance: float = 5.0  # pixels; smaller faces are left as they are (as officially)
    background: str | None = None  # None: bicubic | realesrgan | path of any spandrel upscaler
    background_tile: int = (
        BACKGROUND_TILE  # background tile side, input pixels (official 400); 0 = untiled
    )
    background_tile_pad: int = BACKGROUND_TILE_PAD  # context pixels around each tile (official 10)

    def __post_init__(self):
        _check(self)
        check_detector(self.detector, "detector")
        if self.background_tile < 0 or self.background_tile_pad < 0:
            raise ValueError(
                "background_tile and background_tile_pad must be >= 0; got "
                f"{self.background_tile} and {self.background_tile_pad}."
            )


@dataclass(frozen=True)
class PipelineConfig:
    """Options of a whole run, one frozen config per stage."""

    extract: ExtractConfig = field(default_factory=ExtractConfig)
    coeffs: CoeffConfig = field(default_factory=CoeffConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    blend: str = "feather"  # paste-back for full/extfull: feather (fast) | poisson (official)
    enhance: EnhanceConfig | None = None  # face restoration (GFPGAN / RestoreFormer); None: off
    crf: int = 18  # H.264 quality: 0 lossless .. 51 worst; 18 is visually lossless

    def __post_init__(self):
        _check(self)


def _check(config) -> None:
    """The option fields of ``config`` against the option schema (choices, bounds)."""
    from .options import check_config  # the schema reads this module's defaults

    check_config(config)


def check_detector(name: str, label: str = "detector") -> str:
    """``name`` if it is a face detector name (``auto`` or one of DETECTORS).

    Raises:
        OptionError: an unknown name, with the known ones.
    """
    from .options import BY_NAME

    return BY_NAME["detector"].check(name, label)


FIELD_HELP: dict[str, str] = {
    # extract
    "preprocess": "how the face is cropped: crop (face only), extcrop (face with more margin), "
    "resize (the whole picture), full / extfull (face pasted back into the whole picture)",
    "size": "render resolution in px (512 needs the 512 px checkpoint files)",
    "detector": "face detector: auto (the best available), official (RetinaFace + AWing), "
    "face_alignment, dlib",
    "face_index": "which face when the picture holds several (0 = the largest)",
    "min_image_side": "smallest accepted picture side, px",
    "min_face_side": "smallest accepted face, px",
    "max_detect_side": "detection runs on a copy at most this large, px",
    "max_track_shift": "full modes: a face re-detected in the crop must lie within this many face "
    "sizes of the expected place",
    # render
    "batch_size": "frames per generator call (more is faster on a GPU and needs more memory)",
    "enhance_batch_size": "faces restored per network call (more is faster on a GPU)",
    "precision": "auto (tf32 on CUDA, fp32 on CPU), fp32 (exact), tf32, bf16, fp16 (faster, "
    "approximate; tf32 off CUDA and fp16 on a CPU render in fp32)",
    "compile": "torch.compile the decoder: auto (AVX-512 CPUs, clips of 250+ frames), on, off "
    "(compiling takes 15-25 s once per process; exact fp32 is never compiled)",
    # enhance
    "enhancer": "face restoration: gfpgan (GFPGAN v1.4) or RestoreFormer",
    "upscale": "output frames are this many times larger (the official enhancer: 2)",
    "min_eye_distance": "faces with eyes closer than this many pixels are left as they are",
    "background": "background upscaler: none (bicubic), realesrgan, or any spandrel upscaler file",
    "background_tile": "background tile side in input pixels (0: whole frames)",
    "background_tile_pad": "context pixels around each background tile",
    # whole run
    "blend": "paste-back of the full modes: feather (fast) or poisson (the official)",
    "crf": "H.264 quality: lower is better, 0 is lossless; 18 is visually lossless",
    # coefficients
    "seed": "random seed of the blink schedule and the head-motion latents (same seed -> same "
    "coefficients)",
    "pose_style": "head-motion style class of the PoseVAE",
    "expression_scale": "scale of the predicted expression around the source's own expression "
    "(1 = as predicted, 0 = no lip motion, >1 exaggerates)",
    "head_motion_scale": "scale of the predicted head motion around the source pose "
    "(1 = as predicted, 0 = still)",
    "still": "keep the source head pose in every frame (blinks and lips still move)",
    "blink": "add random eye blinks",
    "fps": "output frame rate; the networks run at 25 fps and other rates are resampled",
    "input_yaw": "yaw keypoints in degrees the renderer's head yaw follows over the clip "
    "(one value = fixed)",
    "input_pitch": "pitch keypoints in degrees, like input_yaw",
    "input_roll": "roll keypoints in degrees, like input_yaw",
    "idle_seconds": "make this many seconds of idle head motion and blinks with a closed mouth "
    "instead of lip-syncing audio",
    "chunk_frames": "frames per network pass (memory only)",
}
