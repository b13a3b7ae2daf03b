"""The option schema (sadtalker_core/options.py) and the hosts generated from it: every option
appears in the CLI and in the A1111 tab / API with the schema's default, choices and bounds.
(The ComfyUI nodes are walked in test_comfyui.py.)"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sadtalker_core import options as schema  # noqa: E402
from sadtalker_core.cli import common  # noqa: E402
from sadtalker_core.cli.main import build_parser, main  # noqa: E402
from sadtalker_core.config import (  # noqa: E402
    CoeffConfig,
    EnhanceConfig,
    ExtractConfig,
    PipelineConfig,
    RenderConfig,
)
from sadtalker_core.errors import OptionError  # noqa: E402
from sadtalker_webui import options as tab  # noqa: E402

# Which schema stages each command exposes (besides its own inputs).
COMMANDS = {
    "extract": ("extract",),
    "coeffs": ("coeffs",),
    "render": ("render", "run", "enhance"),
    "generate": ("extract", "coeffs", "render", "run", "enhance"),
}


def _command(name: str) -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices[name]


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def _too_big(o: schema.Option):
    return o.max + (1 if o.type is int else 0.5)


def _too_small(o: schema.Option):
    return o.min - (1 if o.type is int else 0.5)


def test_every_config_field_is_an_option_or_internal():
    """A new config field must be declared in the schema (or listed as internal, with why)."""
    configs = {
        "extract": ExtractConfig,
        "coeffs": CoeffConfig,
        "render": RenderConfig,
        "enhance": EnhanceConfig,
        "run": PipelineConfig,
    }
    assert configs == schema.CONFIGS
    for stage, cls in configs.items():
        for f in dataclasses.fields(cls):
            key = f"{stage}.{f.name}"
            is_option = any(o.stage == stage and o.field == f.name for o in schema.OPTIONS)
            assert is_option != (key in schema.INTERNAL), key
    assert len(schema.BY_NAME) == len(schema.OPTIONS)  # names are unique


def test_defaults_come_from_the_configs():
    run = PipelineConfig()
    for o in schema.OPTIONS:
        stage = run if o.stage == "run" else getattr(run, o.stage)
        if stage is None:  # the enhance stage is off in a default run: its switch is None
            assert o.stage_default == getattr(EnhanceConfig(), o.field), o.name
            assert o.default is None if o.switch else o.default == o.stage_default, o.name
            continue
        assert getattr(stage, o.field) == o.default, o.name
    assert schema.values_of(run) == {o.name: o.default for o in schema.OPTIONS}


def test_configs_check_their_fields_through_the_schema():
    for o in schema.OPTIONS:
        cls = schema.CONFIGS[o.stage]
        if o.min is not None:
            for bad in (_too_small(o), _too_big(o)):
                with pytest.raises(OptionError, match=rf"{o.field} must be .*in") as e:
                    cls(**{o.field: bad})
                assert e.value.option == o.field
            cls(**{o.field: o.max})
        elif o.choices and not o.paths:
            with pytest.raises(OptionError, match=o.field) as e:
                cls(**{o.field: "nonsense" if o.type is str else max(o.choices) + 1})
            assert e.value.option == o.field
            for choice in o.choices:
                cls(**{o.field: choice})


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_exposes_every_option_with_the_schema_values(command):
    parser = _command(command)
    flags = _flags(parser)
    help_text = " ".join(parser.format_help().split())
    for o in schema.options(*COMMANDS[command]):
        if o.type is bool and o.default:
            action = flags[f"--no_{o.name}"]
            assert action.dest == o.name and action.default is True
            continue
        action = flags[f"--{o.name}"]
        assert action.default == o.default, o.name
        if o.choices and not o.paths:
            assert tuple(action.choices) == o.shown_choices, o.name
        line = " ".join(schema.help_line(o).split())
        assert line in help_text, o.name  # the help line: choices or range, and the default
        if o.min is not None:
            for bad in (_too_small(o), _too_big(o)):
                args = parser.parse_args(_required(command) + [f"--{o.name}", str(bad)])
                with pytest.raises(OptionError, match=f"--{o.name} must be") as e:
                    common.option_values(args, COMMANDS[command])
                assert e.value.option == o.name
            args = parser.parse_args(_required(command) + [f"--{o.name}", str(o.max)])
            assert common.option_values(args, COMMANDS[command])[o.name] == o.max


def _required(command: str) -> list[str]:
    return {
        "extract": ["--source_image", "x.png", "--out", "x.npz"],
        "coeffs": ["--face", "x.npz", "--out", "x.npz"],
        "render": ["--face", "x.npz", "--coeffs", "y.npz"],
        "generate": [],
    }[command]


def test_generate_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch_size INT frames per generator call" in text
    assert "range 1..64; default: 2" in text
    assert "choices: crop, extcrop, resize, full, extfull; default: crop" in text
    assert "choices: none, gfpgan, RestoreFormer; default: none" in text
    assert text.count("default:") >= len(schema.OPTIONS) - 1  # --no_blink says "on by default"


def test_tab_exposes_every_option_with_the_schema_values():
    assert [o.name for o in tab.OPTIONS] == [o.name for o in schema.OPTIONS]
    for o in schema.OPTIONS:
        control = tab.BY_NAME[o.name]
        assert control.hint == o.help and control.basic == (not o.advanced)
        assert control.choices == o.shown_choices, o.name
        if o.default is None:
            assert control.default in (schema.NONE, 0, None), o.name
            assert schema.BY_NAME[o.name].parse(control.default) is None
        else:
            assert control.default == o.default, o.name
        if o.min is None:
            assert control.bounds is None, o.name
            continue
        assert control.bounds[:2] == (o.min, o.max), o.name
        for bad in (_too_small(o), _too_big(o)):
            with pytest.raises(OptionError, match=f"'{o.name}' must be .*in") as e:
                tab.pipeline_config({o.name: bad})
            assert e.value.option == o.name
        config, values = tab.pipeline_config({o.name: o.max, "enhancer": "gfpgan"})
        assert values[o.name] == o.max


def test_tab_and_api_refuse_what_the_tab_does_not_offer():
    with pytest.raises(OptionError, match="'background_enhancer': choose one of none, realesrgan"):
        tab.pipeline_config({"enhancer": "gfpgan", "background_enhancer": "/etc/passwd"})
    config, values = tab.pipeline_config({"idle_seconds": 0, "enhancer": "none"})
    assert config.coeffs.idle_seconds is None and config.enhance is None
    with pytest.raises(OptionError, match="Give either 'driven_audio' or 'idle_seconds', not both"):
        tab.pipeline_config({"idle_seconds": 1}, audio=True)


def test_rules_between_options_name_the_option_in_each_host():
    values = schema.parse_values({"background_enhancer": "realesrgan"})
    with pytest.raises(OptionError) as e:
        schema.pipeline_config(values)
    assert e.value.options == ("background_enhancer", "enhancer")
    assert str(e.value).startswith("background_enhancer works together with enhancer")
    cli = str(e.value.named(common.flag))
    assert cli.startswith("--background_enhancer works together with --enhancer"), cli
    with pytest.raises(OptionError, match="Give either audio or idle_seconds, not both"):
        schema.check_speech(True, 1.0)
    with pytest.raises(OptionError) as e:
        schema.check_speech(False, None)
    assert "--driven_audio" in str(e.value.named(common.flag)) and e.value.option == "idle_seconds"
    with pytest.raises(OptionError, match="idle_seconds must cover at least one frame"):
        schema.validate({"idle_seconds": 0.01, "fps": 25.0})
    for detector in ("mtcnn", 3):
        with pytest.raises(OptionError, match=f"Unknown face detector '{detector}'.*detector must"):
            schema.parse_values({"detector": detector})


def test_a_new_option_appears_in_every_host(monkeypatch):
    """Declared once in the schema -> a CLI flag with its default and range, a tab control."""
    fake = dataclasses.replace(
        schema.BY_NAME["crf"], name="new_option", default=7, min=0, max=9, advanced=True
    )
    monkeypatch.setattr(schema, "OPTIONS", (*schema.OPTIONS, fake))
    parser = argparse.ArgumentParser()
    common.add_options(parser, ("run",))
    action = _flags(parser)["--new_option"]
    assert action.default == 7 and "range 0..9; default: 7" in action.help
    control = tab._control(fake)
    assert (control.kind, control.default, control.bounds) == ("int", 7, (0, 9, 1))


def test_bounds_are_finite_or_choices():
    for o in schema.OPTIONS:
        if o.type in (int, float) and not o.choices:
            assert o.min is not None and math.isfinite(o.max), o.name
