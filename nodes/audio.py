"""Coefficient node: speech AUDIO + source face -> per-frame motion (SADTALKER_COEFFS)."""

from __future__ import annotations

import re

from ..sadtalker_core.config import FIELD_HELP, NUM_POSE_STYLES, CoeffConfig, PipelineConfig
from . import _host
from .types import COEFFS, FACE, MODELS, SadTalkerModels

MAX_SEED = 0xFFFFFFFFFFFFFFFF  # ComfyUI's usual seed range (numpy and torch accept 64 bits)
ANGLE_INPUTS = ("input_yaw", "input_pitch", "input_roll")
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


class SadTalkerAudioToCoeffs:
    CATEGORY = "SadTalker"
    DESCRIPTION = (
        "Turns speech into one row of motion coefficients per video frame: lip and expression "
        "motion (ExpNet), head motion (PoseVAE) and eye blinks. The same seed gives the same "
        "motion. The frame count is round(audio seconds x fps)."
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
                "audio": (
                    "AUDIO",
                    {
                        "tooltip": "Speech to lip-sync (any sample rate, mono or stereo; "
                        "resampled to 16 kHz mono)."
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": d.seed,
                        "min": 0,
                        "max": MAX_SEED,
                        "control_after_generate": True,
                        "tooltip": _tip("seed"),
                    },
                ),
                "pose_style": (
                    "INT",
                    {
                        "default": d.pose_style,
                        "min": 0,
                        "max": NUM_POSE_STYLES - 1,
                        "tooltip": _tip("pose_style"),
                    },
                ),
                "expression_scale": (
                    "FLOAT",
                    {
                        "default": d.expression_scale,
                        "min": 0.0,
                        "max": 3.0,
                        "step": 0.05,
                        "tooltip": _tip("expression_scale"),
                    },
                ),
                "head_motion_scale": (
                    "FLOAT",
                    {
                        "default": d.head_motion_scale,
                        "min": 0.0,
                        "max": 3.0,
                        "step": 0.05,
                        "tooltip": _tip("head_motion_scale"),
                    },
                ),
                "still": ("BOOLEAN", {"default": d.still, "tooltip": _tip("still")}),
                "blink": ("BOOLEAN", {"default": d.blink, "tooltip": _tip("blink")}),
                "fps": (
                    "FLOAT",
                    {
                        "default": d.fps,
                        "min": 1.0,
                        "max": 120.0,
                        "step": 1.0,
                        "tooltip": _tip("fps"),
                    },
                ),
            },
            "optional": {
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
        audio: dict,
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
    ):
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
        )
        coeffs = models.pipeline.coefficients(
            face, audio, PipelineConfig(coeffs=config), progress=_host.ProgressCallback()
        )
        return (coeffs,)


NODE_CLASS_MAPPINGS = {"SadTalkerAudioToCoeffs": SadTalkerAudioToCoeffs}
NODE_DISPLAY_NAME_MAPPINGS = {"SadTalkerAudioToCoeffs": "SadTalker Audio To Coefficients"}
