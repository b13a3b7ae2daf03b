"""The option schema: every option a user can set, declared once, and the one validator.

Each :class:`Option` says which stage config holds it, its type, its default (read off the
config dataclass, never retyped), its choices or bounds, its help line (``FIELD_HELP``) and
whether hosts show it among the basics. The CLI's flags, the ComfyUI inputs and the A1111 tab's
controls and API fields are generated from :data:`OPTIONS`; the config dataclasses check their
fields with :func:`check_config`; :func:`validate` checks the rules between options.

A host enumerates and builds::

    for o in options("coeffs"):            # or options() for a whole run
        o.name, o.type, o.default, o.min, o.max, o.choices, o.help, o.advanced
    values = parse_values({"pose_style": "3", "enhancer": "gfpgan"})   # text/JSON -> typed
    config = pipeline_config(values, audio=True)    # + the rules between options

Every check raises :class:`~.errors.OptionError` naming the option; ``error.named("--{}".format)``
spells the names as the host does.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import (
    AUTO,
    BLENDS,
    COMPILE_MODES,
    DETECTORS,
    ENHANCER_NAMES,
    FIELD_HELP,
    NUM_POSE_STYLES,
    PRECISIONS,
    PREPROCESS_MODES,
    SIZES,
    UPSCALES,
    CoeffConfig,
    EnhanceConfig,
    ExtractConfig,
    PipelineConfig,
    RenderConfig,
)
from .errors import OptionError

NONE = "none"  # how hosts spell None (off / not given) in a list of choices
BACKGROUND_UPSCALERS = ("realesrgan",)  # named background upscalers (besides a file path)
MAX_SEED = 0xFFFFFFFFFFFFFFFF  # 64 bits: numpy's and torch's generators take any of them
MAX_FPS = 120.0
MAX_BATCH = 64  # frames (render) or faces (enhance) per call; out of memory halves it anyway
MAX_FACE_INDEX = 64
MAX_SCALE = 3.0  # expression and head-motion multipliers
MAX_IDLE_SECONDS = 3600.0
MAX_CRF = 51  # H.264: 0 lossless .. 51 worst

CONFIGS: dict[str, type] = {
    "extract": ExtractConfig,
    "coeffs": CoeffConfig,
    "render": RenderConfig,
    "enhance": EnhanceConfig,
    "run": PipelineConfig,  # the whole run's own fields (blend, crf)
}
STAGES = tuple(CONFIGS)

# Config fields that are not user options, and why (tests check every field is one or the other).
INTERNAL: dict[str, str] = {
    "extract.min_image_side": "input guard, px",
    "extract.min_face_side": "input guard, px",
    "extract.max_detect_side": "detection speed, px",
    "extract.max_track_shift": "full-mode tracking tolerance",
    "coeffs.chunk_frames": "memory only",
    "enhance.detector": "follows the extract stage's detector",
    "enhance.min_eye_distance": "as officially",
    "enhance.background_tile": "as officially (RealESRGANer tile)",
    "enhance.background_tile_pad": "as officially (RealESRGANer tile_pad)",
    "run.extract": "a stage",
    "run.coeffs": "a stage",
    "run.render": "a stage",
    "run.enhance": "a stage (the enhancer option switches it)",
}


def _esc(value: Any) -> str:
    """``value`` as text that survives ``str.format`` in an OptionError template."""
    return str(value).replace("{", "{{").replace("}", "}}")


def _field_default(stage: str, name: str) -> Any:
    f = next(f for f in dataclasses.fields(CONFIGS[stage]) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


@dataclass(frozen=True)
class Option:
    """One user option.

    Attributes:
        name: the name in every host: CLI flag ``--name``, API/tab key, ComfyUI input.
        stage: the config holding it: extract | coeffs | render | enhance | run.
        field: its field in that config.
        type: bool, int, float, str, or tuple (a list of degrees).
        default: its value in a default run (from the dataclasses; None: off or not given).
        help: one line (``FIELD_HELP``).
        choices: the allowed values (str or int options); empty: any within the bounds.
        min, max: inclusive bounds of a number.
        step: the increment a slider or number widget uses (presentation only).
        advanced: shown under "Advanced" (the basics are shown first).
        nullable: None is allowed (hosts offer :data:`NONE`, or 0 for ``idle_seconds``).
        switch: the option turns its stage on (None: the stage is off in the run).
        paths: a file path is accepted besides the choices.
        zero_is_none: hosts without a None widget show 0 for None (parsed back to None).
        unknown: message template for a value outside the choices (``{0}``: the option name).
    """

    name: str
    stage: str
    field: str
    type: type
    default: Any
    help: str
    choices: tuple = ()
    min: float | None = None
    max: float | None = None
    step: float | None = None
    advanced: bool = True
    nullable: bool = False
    switch: bool = False
    paths: bool = False
    zero_is_none: bool = False
    unknown: str = ""

    @property
    def stage_default(self) -> Any:
        """The default of the field in its own stage config (for a host of that stage alone:
        the Enhance node's enhancer is gfpgan while a default run enhances nothing)."""
        return _field_default(self.stage, self.field)

    @property
    def shown_choices(self) -> tuple:
        """The choices with :data:`NONE` first when the option may be off."""
        return ((NONE,) if self.nullable and self.choices else ()) + self.choices

    def check(self, value: Any, name: str | None = None) -> Any:
        """``value`` (already of the option's type) checked against the choices and bounds;
        returned normalised (angles as a tuple of floats). ``name``: the name in the message
        (default: the option's; config fields pass their own).

        Raises:
            OptionError: naming the option, the allowed values and what was given.
        """
        label = name or self.name
        if value is None:
            if self.nullable:
                return None
            raise OptionError(f"{label} must be given; it has no 'none' value.")
        if self.type is tuple:
            return _angles(value, label)
        if self.choices:
            if value in self.choices:
                return value
            if self.paths and isinstance(value, (str, os.PathLike)) and str(value).strip():
                return value
            if self.unknown:
                raise OptionError(self.unknown.replace("{value}", _esc(value)), label)
            if all(isinstance(c, int) for c in self.choices):
                allowed = ", ".join(map(str, self.choices[:-1])) + f" or {self.choices[-1]}"
                raise OptionError(f"{{0}} must be {allowed}; got {_esc(value)}.", label)
            allowed = ", ".join(map(str, self.choices))
            extra = " or a file path" if self.paths else ""
            raise OptionError(
                f"{{0}} must be one of {_esc(allowed)}{extra}; got '{_esc(value)}'.", label
            )
        if self.type in (int, float):
            if self.type is float and not math.isfinite(value):
                raise OptionError(f"{{0}} must be finite, got {value}.", label)
            if value > self.max:
                raise OptionError(f"{{0}} must be in {bounds(self)}, got {value}.", label)
            if value < self.min and self.type is float and self.min > 0:
                raise OptionError(
                    f"{{0}} must be a positive number in {bounds(self)}, got {value}.", label
                )
            if value < self.min:
                raise OptionError(
                    f"{{0}} must be >= {self.min:g} (in {bounds(self)}), got {value}.", label
                )
        return value

    def parse(self, value: Any) -> Any:
        """A host's input (text, JSON) converted to the option's type and checked.
        ``None``, ``""`` and :data:`NONE` mean None; an empty angle list too.

        Raises:
            OptionError: not convertible, or refused by :meth:`check`.
        """
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", NONE)):
            if self.type is bool:
                raise OptionError("{0}: expected true or false, got nothing.", self.name)
            return self.check(None if self.nullable else value)
        try:
            value = _convert(self, value)
        except (TypeError, ValueError) as e:
            raise OptionError(f"{{0}}: {_esc(e)}.", self.name) from e
        if self.zero_is_none and value == 0:
            return None
        return self.check(value)


def _angles(value: Any, label: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        value = (value,)
    try:
        angles = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        angles = ()
    if not angles or not all(math.isfinite(v) for v in angles):
        raise OptionError(f"{{0}} must hold at least one finite angle, got {_esc(value)}.", label)
    return angles


def _convert(o: Option, value: Any) -> Any:
    """Text or JSON -> the option's type (TypeError/ValueError with the reason)."""
    if o.type is tuple:
        if isinstance(value, str):
            value = value.replace(",", " ").replace(";", " ").split()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list of degrees, got {type(value).__name__}")
        return tuple(float(v) for v in value) or None
    if o.type is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise TypeError(f"expected true or false, got {value!r}")
        return bool(value)
    if o.choices:  # matched without case; anything else is refused by Option.check
        return {str(c).lower(): c for c in o.choices}.get(str(value).lower(), value)
    if o.type is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise TypeError(f"expected a whole number, got {value!r}")
        return int(float(value))
    if o.type is float:
        if isinstance(value, bool):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    return str(value)


def _option(stage: str, field: str, name: str | None = None, **kw) -> Option:
    name = name or field
    default = _field_default(stage, field)
    if kw.get("switch") and _field_default("run", stage) is None:
        default = None  # the stage is off in a default run
    kw.setdefault("nullable", default is None)
    if isinstance(default, bool):
        kind = bool
    elif "choices" in kw:
        kind = type(kw["choices"][0])
    elif field.startswith("input_"):
        kind = tuple
    else:
        kind = float if isinstance(default, float) or kw.get("type") is float else int
    kw.pop("type", None)
    return Option(name, stage, field, kind, default, FIELD_HELP.get(name, FIELD_HELP[field]), **kw)


_DETECTOR = dict(
    choices=(AUTO, *DETECTORS),
    unknown="Unknown face detector '{value}'. Choose one of: "
    + ", ".join((AUTO, *DETECTORS))
    + " ({0} must be auto or one of the backends).",
)

OPTIONS: tuple[Option, ...] = (
    # extract
    _option("extract", "preprocess", choices=PREPROCESS_MODES, advanced=False),
    _option("extract", "size", choices=SIZES, advanced=False),
    _option("extract", "detector", **_DETECTOR),
    _option("extract", "face_index", min=0, max=MAX_FACE_INDEX, step=1),
    # coefficients
    _option("coeffs", "pose_style", min=0, max=NUM_POSE_STYLES - 1, step=1, advanced=False),
    _option("coeffs", "still", advanced=False),
    _option("coeffs", "expression_scale", min=0.0, max=MAX_SCALE, step=0.05),
    _option("coeffs", "head_motion_scale", min=0.0, max=MAX_SCALE, step=0.05),
    _option("coeffs", "seed", min=0, max=MAX_SEED, step=1),
    _option("coeffs", "blink"),
    _option("coeffs", "fps", min=1.0, max=MAX_FPS, step=1.0),
    _option("coeffs", "input_yaw"),
    _option("coeffs", "input_pitch"),
    _option("coeffs", "input_roll"),
    _option(
        "coeffs",
        "idle_seconds",
        type=float,
        min=0.0,
        max=MAX_IDLE_SECONDS,
        step=0.5,
        zero_is_none=True,
    ),
    # render
    _option("render", "batch_size", min=1, max=MAX_BATCH, step=1, advanced=False),
    _option("render", "precision", choices=PRECISIONS),
    _option("render", "compile", choices=COMPILE_MODES),
    # the run
    _option("run", "blend", choices=BLENDS),
    _option("run", "crf", min=0, max=MAX_CRF, step=1),
    # enhance
    _option("enhance", "enhancer", choices=ENHANCER_NAMES, switch=True, advanced=False),
    _option("enhance", "upscale", "enhance_upscale", choices=UPSCALES),
    _option("enhance", "batch_size", "enhance_batch_size", min=1, max=MAX_BATCH, step=1),
    _option(
        "enhance", "background", "background_enhancer", choices=BACKGROUND_UPSCALERS, paths=True
    ),
)
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
_BY_FIELD: dict[tuple[str, str], Option] = {(o.stage, o.field): o for o in OPTIONS}


def options(*stages: str) -> tuple[Option, ...]:
    """The options of the given stages (all of them when none is given), schema order."""
    for s in stages:
        if s not in CONFIGS:
            raise ValueError(f"Unknown stage '{s}'; the stages are {', '.join(STAGES)}.")
    return tuple(o for o in OPTIONS if not stages or o.stage in stages)


def option_of(stage: str, field: str) -> Option:
    """The option stored in ``field`` of ``stage``'s config."""
    return _BY_FIELD[(stage, field)]


def check_config(config: Any) -> None:
    """Check every option field of a stage config (called by the dataclasses' ``__post_init__``).

    Raises:
        OptionError: naming the field.
    """
    stage = next(s for s, cls in CONFIGS.items() if isinstance(config, cls))
    for o in OPTIONS:
        if o.stage == stage and not (o.switch and getattr(config, o.field) is None):
            value = o.check(getattr(config, o.field), o.field)
            if value is not getattr(config, o.field):
                object.__setattr__(config, o.field, value)
    if stage == "coeffs":
        check_idle_frames(config.idle_seconds, config.fps)


def check_idle_frames(idle_seconds: float | None, fps: float) -> None:
    """Idle mode makes at least one frame."""
    if idle_seconds is not None and idle_seconds * fps < 1.0:
        raise OptionError(
            f"{{0}} must cover at least one frame ({1 / fps:.3f} s at {fps:g} fps), "
            f"got {idle_seconds}.",
            "idle_seconds",
        )


def check_speech(audio: bool, idle_seconds: float | None) -> None:
    """The driving input: speech for lip sync, or ``idle_seconds`` of idle motion; exactly one.

    Raises:
        OptionError: naming ``idle_seconds`` and ``audio`` (hosts call it e.g. ``driven_audio``).
    """
    if audio and idle_seconds is not None:
        raise OptionError("Give either {1} or {0}, not both.", "idle_seconds", "audio")
    if not audio and idle_seconds is None:
        raise OptionError(
            "No audio given: give speech ({1}), or set {0} for idle mode.", "idle_seconds", "audio"
        )


def validate(values: Mapping[str, Any], audio: bool | None = None) -> None:
    """The rules between options of a whole run (each value already checked by
    :func:`parse_values`). ``audio``: whether speech is given (None: not known yet).

    Raises:
        OptionError: naming the option to change.
    """
    if values.get("background_enhancer") is not None and values.get("enhancer") is None:
        raise OptionError(
            "{0} works together with {1} (upscaling the background goes together with a face "
            "enhancer, as in the official CLI): set {1} to "
            + " or ".join(ENHANCER_NAMES)
            + ", or leave {0} out.",
            "background_enhancer",
            "enhancer",
        )
    if audio is not None:
        check_speech(audio, values.get("idle_seconds"))
    if values.get("idle_seconds") is not None:
        check_idle_frames(values["idle_seconds"], values.get("fps", BY_NAME["fps"].default))


def parse_values(
    values: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    inputs: Iterable[str] = (),
) -> dict[str, Any]:
    """Every option's typed value: ``values`` over ``defaults`` (e.g. host settings) over the
    schema's defaults. Text and JSON values are converted (:meth:`Option.parse`).

    Args:
        values: ``{option name: value}``; None leaves the default.
        defaults: the host's own defaults, same form.
        inputs: other names the host accepts besides options (files), skipped here.

    Raises:
        OptionError: an unknown name (the known ones listed), a wrong type, out of range.
    """
    inputs = tuple(inputs)
    for name in values:
        if name not in BY_NAME and name not in inputs:
            known = ", ".join(sorted(BY_NAME))
            also = f" (and the inputs {', '.join(inputs)})" if inputs else ""
            raise OptionError(f"Unknown option '{_esc(name)}'. Known options: {known}{also}.", name)
    resolved = {o.name: o.default for o in OPTIONS}
    for given in (defaults or {}, values):
        for name, value in given.items():
            if name in BY_NAME and value is not None:
                resolved[name] = BY_NAME[name].parse(value)
    return resolved


def stage_config(stage: str, values: Mapping[str, Any]) -> Any:
    """The config of one stage from ``{option name: typed value}`` (missing: the defaults)."""
    fields = {o.field: values[o.name] for o in options(stage) if o.name in values}
    return CONFIGS[stage](**fields)


def pipeline_config(
    values: Mapping[str, Any], audio: bool | None = None, base: PipelineConfig | None = None
) -> PipelineConfig:
    """A whole run's config from typed option values (:func:`parse_values`), after
    :func:`validate`. Options not in ``values`` keep ``base``'s values (default: the defaults).

    Raises:
        OptionError: a rule between options, or a value a config refuses.
    """
    base = base or PipelineConfig()
    merged = {**values_of(base), **values}
    validate(merged, audio)
    extract = stage_config("extract", merged)
    enhance = None
    if merged["enhancer"] is not None:
        enhance = dataclasses.replace(stage_config("enhance", merged), detector=extract.detector)
    return PipelineConfig(
        extract=extract,
        coeffs=stage_config("coeffs", merged),
        render=stage_config("render", merged),
        enhance=enhance,
        **{o.field: merged[o.name] for o in options("run")},
    )


def values_of(config: PipelineConfig) -> dict[str, Any]:
    """``{option name: value}`` of a whole run's config (the enhance options: their defaults
    when the stage is off)."""
    out = {}
    for o in OPTIONS:
        stage = config if o.stage == "run" else getattr(config, o.stage)
        if stage is None:
            out[o.name] = o.default
        else:
            out[o.name] = getattr(stage, o.field)
    return out


def bounds(o: Option) -> str:
    """``min..max`` as text (whole numbers for int options)."""
    if o.type is int:
        return f"{int(o.min)}..{int(o.max)}"
    return f"{o.min:g}..{o.max:g}"


def help_line(o: Option, none: str = NONE) -> str:
    """The help line with the default and the choices or range, as ``--help`` shows it."""
    parts = [o.help]
    if o.choices:
        parts.append("choices: " + ", ".join(map(str, o.shown_choices if none else o.choices)))
        if o.paths:
            parts[-1] += " or a file path"
    elif o.min is not None:
        parts.append(f"range {bounds(o)}")
    default = o.default
    if default is None:
        default = none if o.type is not float else "not set"
    elif o.type is tuple:
        default = " ".join(f"{v:g}" for v in default)
    parts.append(f"default: {default}")
    return "; ".join(parts)
