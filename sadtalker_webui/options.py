"""Every generation option under its official CLI name (``--pose_style``, ``--still``, ...), with
the tab's hint, and the mapping of a ``{name: value}`` dict onto ``PipelineConfig``.

The tab, the HTTP API and the CLI (``python -m sadtalker_core generate``) use the same names.
Defaults are read off the core's config dataclasses, so none is typed twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sadtalker_core import CoeffConfig, EnhanceConfig, ExtractConfig, PipelineConfig, RenderConfig

_EXTRACT, _COEFFS, _RENDER = ExtractConfig(), CoeffConfig(), RenderConfig()
_ENHANCE, _PIPELINE = EnhanceConfig(), PipelineConfig()

NO_ENHANCER = "none"
# The background upscaler arrived in the core later: offered only when EnhanceConfig has it.
HAS_BACKGROUND = "background" in {f.name for f in fields(EnhanceConfig)}


class OptionError(ValueError):
    """An option is unknown, of the wrong type or out of range (HTTP 400 / error text in the tab)."""


@dataclass(frozen=True)
class Option:
    """One generation option.

    Attributes:
        name: the official CLI name (without ``--``), also the API's JSON key.
        kind: int | float | bool | choice | angles (degrees: a list, or text "0, 10, -10").
        default: value when not given.
        hint: one line shown under the control.
        label: the control's label.
        basic: shown outside the "Advanced" accordion.
        choices: allowed values of a ``choice``.
        bounds: (min, max, step) of a slider; None: a free number box.
    """

    name: str
    kind: str
    default: Any
    hint: str
    label: str
    basic: bool = False
    choices: tuple = ()
    bounds: tuple[float, float, float] | None = None


OPTIONS: tuple[Option, ...] = (
    Option(
        "preprocess",
        "choice",
        _EXTRACT.preprocess,
        "crop: the face only; resize: the whole picture squeezed; full: the face pasted back "
        "into the whole picture; ext*: a larger crop",
        "Preprocess",
        basic=True,
        choices=("crop", "resize", "full", "extcrop", "extfull"),
    ),
    Option(
        "size",
        "choice",
        _EXTRACT.size,
        "face render resolution in px (512 needs SadTalker_V0.0.2_512.safetensors)",
        "Face model resolution",
        basic=True,
        choices=(256, 512),
    ),
    Option(
        "pose_style",
        "int",
        _COEFFS.pose_style,
        "head-motion style class of the pose network, 0..45",
        "Pose style",
        basic=True,
        bounds=(0, 45, 1),
    ),
    Option(
        "still",
        "bool",
        _COEFFS.still,
        "keep the source head pose in every frame (lips and blinks still move); best with full",
        "Still mode (fewer head motion)",
        basic=True,
    ),
    Option(
        "batch_size",
        "int",
        _RENDER.batch_size,
        "frames per renderer call: larger is faster on a GPU and needs more memory",
        "Batch size",
        basic=True,
        bounds=(1, 16, 1),
    ),
    Option(
        "enhancer",
        "choice",
        NO_ENHANCER,
        "restore the face of every frame (GFPGANv1.4.pth / RestoreFormer.pth; slower)",
        "Face enhancer",
        basic=True,
        choices=(NO_ENHANCER, "gfpgan", "RestoreFormer"),
    ),
    Option(
        "expression_scale",
        "float",
        _COEFFS.expression_scale,
        "lip and expression motion: 1 = as predicted, 0 = none, >1 exaggerates",
        "Expression scale",
        bounds=(0.0, 3.0, 0.05),
    ),
    Option(
        "head_motion_scale",
        "float",
        _COEFFS.head_motion_scale,
        "head motion around the source pose: 1 = as predicted, 0 = still",
        "Head motion scale",
        bounds=(0.0, 3.0, 0.05),
    ),
    Option(
        "seed",
        "int",
        _COEFFS.seed,
        "seed of the blinks and head motion: the same seed gives the same clip",
        "Seed",
    ),
    Option("blink", "bool", _COEFFS.blink, "add random eye blinks", "Eye blinks"),
    Option(
        "fps",
        "float",
        _COEFFS.fps,
        "output frame rate; the networks run at 25 fps, other rates are resampled",
        "Frames per second",
        bounds=(1, 60, 1),
    ),
    Option(
        "input_yaw",
        "angles",
        _COEFFS.input_yaw,
        "yaw in degrees the head turns through over the clip, e.g. 0, 20, -20 (empty: predicted)",
        "Yaw path",
    ),
    Option(
        "input_pitch",
        "angles",
        _COEFFS.input_pitch,
        "pitch in degrees over the clip, like the yaw path",
        "Pitch path",
    ),
    Option(
        "input_roll",
        "angles",
        _COEFFS.input_roll,
        "roll in degrees over the clip, like the yaw path",
        "Roll path",
    ),
    Option(
        "idle_seconds",
        "float",
        0.0,
        "seconds of idle motion with a closed mouth instead of lip sync (0: use the audio)",
        "Idle seconds",
    ),
    Option(
        "face_index",
        "int",
        _EXTRACT.face_index,
        "which face when the picture holds several: 0 = the largest",
        "Face index",
    ),
    Option(
        "detector",
        "choice",
        _EXTRACT.detector,
        "face detector: auto picks the first one whose files or package are present",
        "Face detector",
        choices=("auto", "official", "face_alignment", "dlib"),
    ),
    Option(
        "precision",
        "choice",
        _RENDER.precision,
        "auto: tf32 on CUDA, fp32 on CPU; bf16/fp16 are faster and approximate",
        "Precision",
        choices=("auto", "fp32", "tf32", "bf16", "fp16"),
    ),
    Option(
        "blend",
        "choice",
        _PIPELINE.blend,
        "how the face is pasted back in full/extfull: feather (fast) or poisson (the official)",
        "Paste-back blend",
        choices=("feather", "poisson"),
    ),
    Option(
        "enhance_upscale",
        "int",
        _ENHANCE.upscale,
        "with a face enhancer: output frames this many times larger",
        "Enhancer upscale",
        bounds=(1, 4, 1),
    ),
    *(
        [
            Option(
                "background_enhancer",
                "choice",
                NO_ENHANCER,
                "with a face enhancer: upscale the whole frame with Real-ESRGAN "
                "(RealESRGAN_x2plus.pth) instead of bicubic",
                "Background enhancer",
                choices=(NO_ENHANCER, "realesrgan"),
            )
        ]
        if HAS_BACKGROUND
        else []
    ),
    Option(
        "crf",
        "int",
        _PIPELINE.crf,
        "H.264 quality: 0 lossless .. 51 worst; 18 looks lossless",
        "Video quality (crf)",
        bounds=(0, 51, 1),
    ),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
# Inputs the API also accepts besides OPTIONS (files are not options).
INPUT_NAMES = ("source_image", "driven_audio", "ref_eyeblink", "ref_pose")
# Accepted for compatibility with the official CLI; refused with a clear message.
UNAVAILABLE = (
    {}
    if HAS_BACKGROUND
    else {
        "background_enhancer": "The background enhancer (Real-ESRGAN) is not available in "
        "this version of sadtalker_core; 'enhancer' restores the faces."
    }
)


def parse_angles(value: Any) -> tuple[float, ...] | None:
    """``[0, 10]``, ``"0, 10"``, ``"0 10"`` or ``5`` -> a tuple of degrees; empty -> None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"expected a list of degrees, got {type(value).__name__}")
    return tuple(float(v) for v in value) or None


def coerce(option: Option, value: Any) -> Any:
    """The value converted to the option's type. Raises OptionError when it cannot be."""
    try:
        if option.kind == "angles":
            return parse_angles(value)
        if option.kind == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if not isinstance(value, (bool, int)):
                raise TypeError(f"expected true or false, got {value!r}")
            return bool(value)
        if option.kind == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError(f"expected a whole number, got {value!r}")
            value = int(float(value))
        elif option.kind == "float":
            if isinstance(value, bool):
                raise TypeError(f"expected a number, got {value!r}")
            value = float(value)
        elif option.kind == "choice":
            by_text = {str(c).lower(): c for c in option.choices}
            if str(value).lower() not in by_text:
                raise TypeError(
                    f"choose one of {', '.join(str(c) for c in option.choices)}; got {value!r}"
                )
            value = by_text[str(value).lower()]
    except (TypeError, ValueError) as e:
        raise OptionError(f"Option '{option.name}': {e}.") from e
    if option.bounds is not None and option.kind in ("int", "float"):
        lo, hi, _ = option.bounds
        if not lo <= value <= hi:
            raise OptionError(f"Option '{option.name}' must be in {lo:g}..{hi:g}; got {value}.")
    return value


def resolve(values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> dict:
    """Every option's value: ``values`` over ``defaults`` (host settings) over the core's defaults.

    Raises:
        OptionError: an unknown name (with the known ones listed), a wrong type, out of range.
    """
    unknown = [k for k in values if k not in BY_NAME and k not in INPUT_NAMES]
    for name in unknown:
        if name in UNAVAILABLE:
            if values[name] not in (None, "", False, NO_ENHANCER):
                raise OptionError(UNAVAILABLE[name])
            continue
        raise OptionError(
            f"Unknown option '{name}'. Known options: {', '.join(sorted(BY_NAME))} "
            f"(and the inputs {', '.join(INPUT_NAMES)})."
        )
    merged = {o.name: o.default for o in OPTIONS}
    merged.update({k: v for k, v in (defaults or {}).items() if k in BY_NAME})
    merged.update({k: v for k, v in values.items() if k in BY_NAME and v is not None})
    return {name: coerce(BY_NAME[name], v) for name, v in merged.items()}


def pipeline_config(values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None):
    """(PipelineConfig, resolved option dict) for the given options.

    Raises:
        OptionError: see :func:`resolve`, or a combination the core's configs refuse.
    """
    v = resolve(values, defaults)
    enhancer = None if v["enhancer"] == NO_ENHANCER else v["enhancer"]
    background = v.get("background_enhancer", NO_ENHANCER)
    background = None if background == NO_ENHANCER else background
    if background and not enhancer:
        raise OptionError(
            "'background_enhancer' works together with a face enhancer (as in the official "
            "CLI): set 'enhancer' to gfpgan or RestoreFormer, or leave the background off."
        )
    extra = {"background": background} if background else {}
    try:
        config = PipelineConfig(
            extract=ExtractConfig(
                preprocess=v["preprocess"],
                size=v["size"],
                detector=v["detector"],
                face_index=v["face_index"],
            ),
            coeffs=CoeffConfig(
                seed=v["seed"],
                pose_style=v["pose_style"],
                expression_scale=v["expression_scale"],
                head_motion_scale=v["head_motion_scale"],
                still=v["still"],
                blink=v["blink"],
                fps=v["fps"],
                input_yaw=v["input_yaw"],
                input_pitch=v["input_pitch"],
                input_roll=v["input_roll"],
                idle_seconds=v["idle_seconds"] or None,
            ),
            render=RenderConfig(batch_size=v["batch_size"], precision=v["precision"]),
            blend=v["blend"],
            enhance=EnhanceConfig(enhancer, v["enhance_upscale"], v["detector"], **extra)
            if enhancer
            else None,
            crf=v["crf"],
        )
    except ValueError as e:  # the configs name the field and the allowed range
        raise OptionError(str(e)) from e
    return config, v
