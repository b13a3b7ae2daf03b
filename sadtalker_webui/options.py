"""The tab's controls and the API's fields, generated from the core's option schema
(``sadtalker_core/options.py``): every option under its official CLI name, with the schema's
default, choices or bounds and help line. Only the presentation is declared here: the label, and
which numbers get a free number box instead of a slider.

The tab, the HTTP API and the CLI (``python -m sadtalker_core generate``) use the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sadtalker_core import OptionError, PipelineConfig
from sadtalker_core import options as schema

__all__ = ["BY_NAME", "INPUT_NAMES", "OPTIONS", "Option", "OptionError", "pipeline_config"]

# Labels where the capitalised option name does not read well.
LABELS = {
    "size": "Face model resolution",
    "still": "Still mode (fewer head motion)",
    "enhancer": "Face enhancer",
    "blink": "Eye blinks",
    "fps": "Frames per second",
    "input_yaw": "Yaw path",
    "input_pitch": "Pitch path",
    "input_roll": "Roll path",
    "detector": "Face detector",
    "blend": "Paste-back blend",
    "enhance_upscale": "Enhancer upscale",
    "enhance_batch_size": "Enhancer batch size",
    "compile": "Compile the decoder",
    "crf": "Video quality (crf)",
}
NUMBER_BOXES = ("seed", "idle_seconds")  # numbers typed in a box rather than slid
# Inputs the API also accepts besides OPTIONS (files are not options).
INPUT_NAMES = ("source_image", "driven_audio", "ref_eyeblink", "ref_pose")


@dataclass(frozen=True)
class Option:
    """One control of the tab (and field of the API), made from a schema option.

    Attributes:
        name: the official CLI name (without ``--``), also the API's JSON key.
        kind: int | float | bool | choice | angles (degrees: a list, or text "0, 10, -10").
        default: the control's value when not given (``none`` for an off choice, 0 for
            idle_seconds, None for an empty angle path).
        hint: the schema's help line, shown under the control.
        label: the control's label.
        basic: shown outside the "Advanced" accordion.
        choices: allowed values of a ``choice`` (the schema's, ``none`` first when it may be off).
        bounds: (min, max, step) of a number; None: not a number.
        slider: a slider (else a number box).
    """

    name: str
    kind: str
    default: Any
    hint: str
    label: str
    basic: bool = False
    choices: tuple = ()
    bounds: tuple[float, float, float] | None = None
    slider: bool = False


def _control(o: schema.Option) -> Option:
    if o.type is bool:
        kind = "bool"
    elif o.choices:
        kind = "choice"
    elif o.type is tuple:
        kind = "angles"
    else:
        kind = o.type.__name__
    default = o.default
    if default is None and kind == "choice":
        default = schema.NONE
    elif default is None and o.zero_is_none:
        default = o.type(0)
    bounds = (o.min, o.max, o.step) if o.min is not None else None
    return Option(
        o.name,
        kind,
        default,
        o.help,
        LABELS.get(o.name, o.name.replace("_", " ").capitalize()),
        basic=not o.advanced,
        choices=o.shown_choices,
        bounds=bounds,
        slider=bounds is not None and o.name not in NUMBER_BOXES,
    )


OPTIONS: tuple[Option, ...] = tuple(_control(o) for o in schema.OPTIONS)
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def _label(name: str) -> str:
    """An option's (or input's) name in the tab's and the API's messages."""
    return "'driven_audio'" if name == "audio" else f"'{name}'"


def pipeline_config(
    values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None, audio: bool | None = None
) -> tuple[PipelineConfig, dict]:
    """(PipelineConfig, every option's typed value) for the given options: ``values`` over
    ``defaults`` (host settings) over the schema's defaults. ``audio``: whether speech is given
    (checked against ``idle_seconds``; None: not checked).

    Raises:
        OptionError: an unknown name (the known ones listed), a wrong type, out of range, a
            choice the tab does not offer (a file path as the background upscaler), or a
            combination the schema refuses; the option named as ``'name'``.
    """
    try:
        for name, value in values.items():
            o = BY_NAME.get(name)
            offered = {str(c).lower() for c in o.choices} if o is not None else set()
            if offered and value not in (None, "") and str(value).lower() not in offered:
                raise OptionError(
                    f"{{0}}: choose one of {', '.join(map(str, o.choices))}; got {value!r}.", name
                )
        resolved = schema.parse_values(values, defaults, inputs=INPUT_NAMES)
        return schema.pipeline_config(resolved, audio=audio), resolved
    except OptionError as e:
        raise e.named(_label) from e
