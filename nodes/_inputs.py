"""ComfyUI inputs generated from the core's option schema (``sadtalker_core.options``): the
type, default, choices, bounds and help of every option come from there; only the presentation
(tooltip wording, a widget flag, the node's own input name) is added here.

Each node declares the option inputs it had when it was first saved (their order is what saved
workflows' widget values follow); every other option of the node's stages is appended after them
as an optional input, so an option added to the schema appears in the nodes without editing them.
"""

from __future__ import annotations

from typing import Any

from ..sadtalker_core.options import BY_NAME, Option, option_of, options
from ._host import io

OPTION_ATTR = "sadtalker_option"  # set on each generated input: the option it carries


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
    numbers = o.choices and all(isinstance(c, int) for c in o.choices)
    if numbers and list(o.choices) == list(range(min(o.choices), max(o.choices) + 1)):
        # a run of whole numbers (enhance_upscale 1..4): a number widget, as the nodes had
        made = io.Int.Input(
            name,
            default=default,
            min=min(o.choices),
            max=max(o.choices),
            step=1,
            tooltip=tip,
            optional=optional,
        )
    elif o.choices:
        if numbers:  # e.g. size 256 / 512: a list of numbers as text
            choices = o.choices if stage_default else o.shown_choices
            made = io.Combo.Input(
                name,
                options=[str(c) for c in choices],
                default=str(default),
                tooltip=tip,
                optional=optional,
            )
        else:
            choices = list(o.choices if stage_default else o.shown_choices)
            default = choices[0] if default is None else default
            made = io.Combo.Input(
                name, options=choices, default=default, tooltip=tip, optional=optional
            )
    elif o.type is bool:
        made = io.Boolean.Input(name, default=default, tooltip=tip, optional=optional)
    elif o.type is tuple:  # degrees as text: "0, 20, 0"
        made = io.String.Input(name, default="", tooltip=tip, optional=optional)
    else:
        number = io.Int if o.type is int else io.Float
        made = number.Input(
            name,
            default=0 if default is None else default,
            min=o.min,
            max=o.max,
            step=o.step,
            tooltip=tip,
            optional=optional,
            **presentation,
        )
    setattr(made, OPTION_ATTR, o.name)
    return made


def node_inputs(
    declared: list[io.Input], stages: tuple[str, ...], skip: tuple[str, ...] = ()
) -> list[io.Input]:
    """``declared`` (in their saved order) + every other option of ``stages`` (schema order,
    optional), except the options named in ``skip`` (shown another way, or not this node's)."""
    have = {getattr(i, OPTION_ATTR, None) for i in declared}
    extra = [
        option_input(o.stage, o.field, optional=True)
        for o in options(*stages)
        if o.name not in have and o.name not in skip
    ]
    return [*declared, *extra]


def option_values(node: type[io.ComfyNode], inputs: dict[str, Any]) -> dict[str, Any]:
    """``{option name: typed value}`` of a node's option inputs among ``inputs`` (its execute
    arguments): widget text parsed as the schema says ("none" -> None, "256" -> 256, "" angles
    -> None, idle_seconds 0 -> None).

    Raises:
        OptionError: a value the schema refuses (naming the option).
    """
    values = {}
    for spec in node.define_schema().inputs:
        name = getattr(spec, OPTION_ATTR, None)
        if name is not None and spec.id in inputs:
            values[name] = BY_NAME[name].parse(inputs[spec.id])
    return values
