"""Coefficient node: speech AUDIO + source face -> per-frame motion (SADTALKER_COEFFS)."""

from __future__ import annotations

import re

from ..sadtalker_core.config import (
    FIELD_HELP,
    NUM_POSE_STYLES,
    CoeffConfig,
    ExtractConfig,
    PipelineConfig,
)
from . import _host
from .types import COEFFS, FACE, MODELS, SadTalkerModels

MAX_SEED = 0xFFFFFFFFFFFFFFFF  # ComfyUI's usual seed range (numpy and torch accept 64 bits)
ANGLE_INPUTS = ("input_yaw", "input_pitch", "input_roll")
MAX_IDLE_SECONDS = 3600.0
_DEFAULTS = CoeffConfig()


def _tip(field: str) -> str:
    """The core's help text of a CoeffConfig field, capitalised (one source for CLI and UI)."""
    return FIELD_HELP[field][0].upper() + FIELD_HELP[field][1:]


def parse_angles(text: str) -> tuple[float, ...] | None:
    """'0, 20 -10' -> (0.0, 20.0, -10.0); empty -> None (the predicted angles are kept).

    Raises:
        ValueError: a value is not a number.
    """
    parts = [p for p in re.split(r"[\s,;]+", text.strip()) if p]
    return tuple(float(p) for p in parts) if parts else None


def _widget(name: str, kind: str, low: float, high: float, **extra) -> tuple[str, dict]:
    """A number input of a coefficient option: its default and help line from the core."""
    options = {"default": getattr(_DEFAULTS, name), "min": low, "max": high, **extra}
    return kind, {**options, "tooltip": _tip(name)}


class SadTalkerAudioToCoeffs:
    CATEGORY = "SadTalker"
    DESCRIPTION = (
        "Turns speech into one row of motion coefficients per video frame: lip and expression "
        "motion (ExpNet), head motion (PoseVAE) and eye blinks. The same seed gives the same "
        "motion. The frame count is round(audio seconds x fps). Without audio, idle_seconds "
        "of idle motion (blinks and head motion, closed mouth). Optional reference videos (Load "
        "Video) drive the head pose and/or the blinks."
    )
    RETURN_TYPES = (COEFFS,)
    RETURN_NAMES = ("coeffs",)
    OUTPUT_TOOLTIPS = ("Motion coefficients of every frame, with the speech they belong to.",)
    FUNCTION = "coefficients"

    @classmethod
    def INPUT_TYPES(cls):
        d = _DEFAULTS
        return {
            "required": {
                "models": (MODELS, {"tooltip": "From SadTalker Load Models."}),
                "face": (FACE, {"tooltip": "From SadTalker Face Crop."}),
                "seed": _widget("seed", "INT", 0, MAX_SEED, control_after_generate=True),
                "pose_style": _widget("pose_style", "INT", 0, NUM_POSE_STYLES - 1),
                "expression_scale": _widget("expression_scale", "FLOAT", 0.0, 3.0, step=0.05),
                "head_motion_scale": _widget("head_motion_scale", "FLOAT", 0.0, 3.0, step=0.05),
                "still": ("BOOLEAN", {"default": d.still, "tooltip": _tip("still")}),
                "blink": ("BOOLEAN", {"default": d.blink, "tooltip": _tip("blink")}),
                "fps": _widget("fps", "FLOAT", 1.0, 120.0, step=1.0),
            },
            "optional": {
                "audio": (
                    "AUDIO",
                    {
                        "tooltip": "Speech to lip-sync (any sample rate, mono or stereo; "
                        "resampled to 16 kHz mono). Leave it unconnected for idle mode."
                    },
                ),
                **{
                    name: (
                        "STRING",
                        {
                            "default": "",
                            "tooltip": _tip(name) + ". Comma-separated degrees, e.g. '0, 20, 0'; "
                            "empty = the predicted motion.",
                        },
                    )
                    for name in ANGLE_INPUTS
                },
                "idle_seconds": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": MAX_IDLE_SECONDS,
                        "step": 0.5,
                        "tooltip": "Only when no audio is connected: "
                        + FIELD_HELP["idle_seconds"]
                        + ". 0 with no audio is an error.",
                    },
                ),
                "pose_video": (
                    "VIDEO",
                    {
                        "tooltip": "Reference video (Load Video) whose head motion replaces the "
                        "predicted pose, frame by frame (official --ref_pose). Ignored when "
                        "still is on.",
                    },
                ),
                "blink_video": (
                    "VIDEO",
                    {
                        "tooltip": "Reference video (Load Video) whose eye blinks replace the "
                        "generated blinks (official --ref_eyeblink).",
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, input_yaw: str = "", input_pitch: str = "", input_roll: str = ""):
        for name, text in zip(ANGLE_INPUTS, (input_yaw, input_pitch, input_roll)):
            try:
                parse_angles(text)
            except ValueError:
                return f"{name} must be numbers in degrees separated by commas; got '{text}'."
        return True

    def coefficients(
        self,
        models: SadTalkerModels,
        face,
        seed: int,
        pose_style: int,
        expression_scale: float,
        head_motion_scale: float,
        still: bool,
        blink: bool,
        fps: float,
        input_yaw: str = "",
        input_pitch: str = "",
        input_roll: str = "",
        audio: dict | None = None,
        idle_seconds: float = 0.0,
        pose_video=None,
        blink_video=None,
    ):
        if audio is None and idle_seconds <= 0:
            raise ValueError(
                "No audio connected: connect speech (Load Audio), or set idle_seconds for a "
                "clip of idle motion."
            )
        config = CoeffConfig(
            seed=seed,
            pose_style=pose_style,
            expression_scale=expression_scale,
            head_motion_scale=head_motion_scale,
            still=still,
            blink=blink,
            fps=fps,
            input_yaw=parse_angles(input_yaw),
            input_pitch=parse_angles(input_pitch),
            input_roll=parse_angles(input_roll),
            idle_seconds=None if audio is not None else idle_seconds,
        )
        pipe = models.pipeline
        extract = ExtractConfig(
            preprocess=face.preprocess, size=models.size, detector=models.detector
        )
        with _host.MEMORY.stage(pipe.device):
            refs = {
                "ref_pose": reference_rows(pipe, pose_video, extract),
                "ref_eyeblink": reference_rows(pipe, blink_video, extract),
            }
            coeffs = pipe.coefficients(
                face,
                None if audio is None else _host.audio_from_comfy(audio),
                PipelineConfig(coeffs=config),
                progress=_host.ProgressCallback(),
                **refs,
            )
        return (coeffs,)


def reference_rows(pipe, video, extract: ExtractConfig):
    """Per-frame coefficient rows of a reference VIDEO (None when not connected)."""
    if video is None:
        return None
    with _host.video_path(video) as path:
        config = PipelineConfig(extract=extract)
        return pipe.reference_rows(path, config, progress=_host.ProgressCallback())


NODE_CLASS_MAPPINGS = {"SadTalkerAudioToCoeffs": SadTalkerAudioToCoeffs}
NODE_DISPLAY_NAME_MAPPINGS = {"SadTalkerAudioToCoeffs": "SadTalker Audio To Coefficients"}
