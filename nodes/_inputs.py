"""ComfyUI inputs generated from the core's option schema (``sadtalker_core.options``): the
type, default, choices, bounds and help of every option come from there; only the presentation
(tooltip wording, a widget flag) is added here."""

from __future__ import annotations

from ..sadtalker_core.options import Option, option_of
from ._host import io


def _tooltip(o: Option, tooltip: str | None) -> str:
    return tooltip or o.help[0].upper() + o.help[1:] + "."


def option_input(
    stage: str,
    field: str,
    name: str | None = None,
    *,
    tooltip: str | None = None,
    optional: bool = False,
    stage_default: bool = False,
    **presentation,
) -> io.Input:
    """The V3 input of the option stored in ``field`` of ``stage``'s config.

    Args:
        name: the input's name when the node's differs from the option's (saved workflows keep
            the names they were saved with).
        tooltip: the node's own wording (default: the option's help line).
        optional: shown as an optional input.
        stage_default: use the default of the stage config itself (a node of that stage alone),
            not the default of a whole run (e.g. the Enhance node: gfpgan, not off).
        presentation: widget-only extras (``control_after_generate``, ``display_mode``).
    """
    o = option_of(stage, field)
    name = name or o.name
    tip = _tooltip(o, tooltip)
    default = o.stage_default if stage_default else o.default
    if o.choices:
        if all(isinstance(c, int) for c in o.choices):  # e.g. size: a list of numbers as text
            options = [str(c) for c in o.shown_choices]
            default = str(default)
        else:
            options = list(o.choices if stage_default else o.shown_choices)
            default = o.shown_choices[0] if default is None else default
        return io.Combo.Input(
            name, options=options, default=default, tooltip=tip, optional=optional
        )
    if o.type is bool:
        return io.Boolean.Input(name, default=default, tooltip=tip, optional=optional)
    if o.type is tuple:  # degrees as text: "0, 20, 0"
        return io.String.Input(name, default="", tooltip=tip, optional=optional)
    number = io.Int if o.type is int else io.Float
    return number.Input(
        name,
        default=0 if default is None else default,
        min=o.min,
        max=o.max,
        step=o.step,
        tooltip=tip,
        optional=optional,
        **presentation,
    )
