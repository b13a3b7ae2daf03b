"""Coefficient node: speech AUDIO + source face -> per-frame motion (SADTALKER_COEFFS)."""

from __future__ import annotations

from ..sadtalker_core.config import ExtractConfig, PipelineConfig
from ..sadtalker_core.errors import OptionError
from ..sadtalker_core.options import check_speech, option_of, stage_config
from . import _host
from ._host import io
from ._inputs import node_inputs, option_input, option_values
from .types import CoeffsType, SadTalkerModels, face_input, models_input

ANGLE_INPUTS = ("input_yaw", "input_pitch", "input_roll")


def parse_angles(name: str, text: str) -> tuple[float, ...] | None:
    """'0, 20 -10' -> (0.0, 20.0, -10.0); empty -> None (the predicted angles are kept).

    Raises:
        OptionError: a value is not a number (naming the input).
    """
    return option_of("coeffs", name).parse(text)


class SadTalkerAudioToCoeffs(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        coeff = "coeffs"
        return io.Schema(
            node_id="SadTalkerAudioToCoeffs",
            display_name="SadTalker Audio To Coefficients",
            category="SadTalker",
            description=(
                "Turns speech into one row of motion coefficients per video frame: lip and "
                "expression motion (ExpNet), head motion (PoseVAE) and eye blinks. The same seed "
                "gives the same motion. The frame count is round(audio seconds x fps). Without "
                "audio, idle_seconds of idle motion (blinks and head motion, closed mouth). "
                "Optional reference videos (Load Video) drive the head pose and/or the blinks."
            ),
            inputs=[
                models_input(),
                face_input(),
                *node_inputs(
                    [
                        option_input(coeff, "seed", control_after_generate=True),
                        option_input(coeff, "pose_style"),
                        option_input(coeff, "expression_scale"),
                        option_input(coeff, "head_motion_scale"),
                        option_input(coeff, "still"),
                        option_input(coeff, "blink"),
                        option_input(coeff, "fps"),
                        io.Audio.Input(
                            "audio",
                            optional=True,
                            tooltip="Speech to lip-sync (any sample rate, mono or stereo; "
                            "resampled to 16 kHz mono). Leave it unconnected for idle mode.",
                        ),
                        *(
                            option_input(
                                coeff,
                                name,
                                optional=True,
                                tooltip=option_of(coeff, name).help.capitalize()
                                + ". Comma-separated degrees, e.g. '0, 20, 0'; empty = the "
                                "predicted motion.",
                            )
                            for name in ANGLE_INPUTS
                        ),
                        option_input(
                            coeff,
                            "idle_seconds",
                            optional=True,
                            tooltip="Only when no audio is connected: "
                            + option_of(coeff, "idle_seconds").help
                            + ". 0 with no audio is an error.",
                        ),
                        io.Video.Input(
                            "pose_video",
                            optional=True,
                            tooltip="Reference video (Load Video; trimmed videos drive exactly "
                            "their frames) whose head motion replaces the predicted pose, frame "
                            "by frame (official --ref_pose). Ignored when still is on.",
                        ),
                        io.Video.Input(
                            "blink_video",
                            optional=True,
                            tooltip="Reference video (Load Video) whose eye blinks replace the "
                            "generated blinks (official --ref_eyeblink).",
                        ),
                    ],
                    (coeff,),
                ),
            ],
            outputs=[
                CoeffsType.Output(
                    display_name="coeffs",
                    tooltip="Motion coefficients of every frame, with the speech they belong to.",
                )
            ],
        )

    @classmethod
    def validate_inputs(
        cls, input_yaw: str = "", input_pitch: str = "", input_roll: str = "", **_
    ) -> bool | str:
        for name, text in zip(ANGLE_INPUTS, (input_yaw, input_pitch, input_roll)):
            try:
                parse_angles(name, text)
            except OptionError:
                return f"{name} must be numbers in degrees separated by commas; got '{text}'."
        return True

    @classmethod
    def execute(
        cls,
        models: SadTalkerModels,
        face,
        audio: dict | None = None,
        pose_video=None,
        blink_video=None,
        **options,
    ) -> io.NodeOutput:
        values = option_values(cls, options)
        check_speech(audio is not None, values.get("idle_seconds"))
        config = stage_config("coeffs", values)
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
        return io.NodeOutput(coeffs)


def reference_rows(pipe, video, extract: ExtractConfig):
    """Per-frame coefficient rows of a reference VIDEO (None when not connected); a trimmed
    VIDEO gives exactly its trimmed frames."""
    if video is None:
        return None
    with _host.video_path(video) as path:
        config = PipelineConfig(extract=extract)
        return pipe.reference_rows(path, config, progress=_host.ProgressCallback())
