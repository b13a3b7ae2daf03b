"""What every command shares: terminal output, progress bars, the checkpoint folders, the flags
of the option schema."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..config import PipelineConfig
from ..errors import OptionError
from ..models.locate import ENV_DEFAULT_CHECKPOINTS, default_checkpoint_dirs
from ..options import BY_NAME, NONE, help_line, options, pipeline_config

PACK = Path(__file__).resolve().parents[2]


def host_model_dirs(pack: Path | None = None) -> list[Path]:
    """The model folder of the host this pack is installed in, for a command run from there:
    ComfyUI's ``models/sadtalker`` (pack in ``custom_nodes/``), A1111/Forge's ``models/SadTalker``
    (pack in ``extensions/``). None when ``SADTALKER_DEFAULT_CHECKPOINTS`` replaces the default
    folders (and no ``pack`` is given)."""
    if pack is None and os.environ.get(ENV_DEFAULT_CHECKPOINTS) is not None:
        return []
    host = (pack or PACK).parent
    if host.name == "custom_nodes":
        return [host.parent / "models" / "sadtalker"]
    if host.name == "extensions":
        return [host.parent / "models" / "SadTalker"]
    return []


def checkpoint_dirs(args: argparse.Namespace) -> list[Path]:
    """Folders searched by a command: ``--checkpoint_dir``, the environment variable, the host's
    model folder, the pack's ``checkpoints/``."""
    explicit: list[str | os.PathLike] = [args.checkpoint_dir] if args.checkpoint_dir else []
    dirs = default_checkpoint_dirs(explicit)
    host = [d for d in host_model_dirs() if d not in dirs]
    return dirs[:-1] + host + dirs[-1:] if host else dirs


def say(*parts: object, file=None) -> None:
    """Terminal output of the command-line tools (the library itself only logs)."""
    print(*parts, file=file or sys.stdout)  # noqa: T201


class TerminalBar:
    """A tqdm bar driven by ``(done, total)`` calls; silent when tqdm is not installed.

    Args:
        desc: label in front of the bar.
        unit: what is counted (``"frame"``, ``"B"``...).
        unit_scale: show k/M prefixes (for bytes).
    """

    def __init__(self, desc: str = "", unit: str = "it", unit_scale: bool = False):
        self.desc, self.unit, self.unit_scale = desc, unit, unit_scale
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(
                total=total or None,
                unit=self.unit,
                unit_scale=self.unit_scale,
                desc=self.desc,
                file=sys.stderr,
            )
        self._bar.update(done - self._bar.n)
        if total and done >= total:  # finished: later log lines do not redraw the bar
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None


# Input names of the commands where the library's names differ (the official CLI's spelling).
_CLI_NAMES = {"audio": "driven_audio"}


def flag(name: str) -> str:
    """The command-line spelling of an option or input name (for OptionError.named)."""
    return f"--{_CLI_NAMES.get(name, name)}"


def add_options(
    parser, stages: tuple[str, ...], only: tuple[str, ...] = (), skip: tuple[str, ...] = ()
) -> None:
    """One flag per schema option of ``stages`` (sadtalker_core/options.py), its help line with
    the choices or range and the default. Values are checked by :func:`option_values`, so a bad
    one exits with status 1 and a message naming the flag. ``only``/``skip``: option names."""
    for o in options(*stages):
        if o.name in skip or (only and o.name not in only):
            continue
        text = help_line(o).replace("%", "%%")
        if o.type is bool and o.default:
            parser.add_argument(
                f"--no_{o.name}",
                f"--no-{o.name}",
                dest=o.name,
                action="store_false",
                help=f"turn off: {o.help} (on by default)",
            )
        elif o.type is bool:
            parser.add_argument(f"--{o.name}", action="store_true", help=text)
        elif o.type is tuple:
            parser.add_argument(
                f"--{o.name}", nargs="+", type=float, metavar="DEG", default=o.default, help=text
            )
        elif o.paths:
            metavar = "|".join((*o.choices, "FILE"))
            parser.add_argument(f"--{o.name}", metavar=metavar, default=o.default, help=text)
        else:
            parser.add_argument(
                f"--{o.name}",
                type=o.type,
                default=o.default,
                choices=o.shown_choices or None,
                metavar=None if o.choices else o.type.__name__.upper(),
                help=text,
            )


def option_values(args: argparse.Namespace, stages: tuple[str, ...]) -> dict:
    """``{option name: value}`` of the flags of :func:`add_options`, each checked.

    Raises:
        OptionError: naming the flag.
    """
    values = {o.name: getattr(args, o.name) for o in options(*stages) if hasattr(args, o.name)}
    try:
        return {
            name: BY_NAME[name].check(None if v == NONE and BY_NAME[name].nullable else v)
            for name, v in values.items()
        }
    except OptionError as e:
        raise e.named(flag) from e


def run_config(args: argparse.Namespace, stages: tuple[str, ...], **kwargs) -> PipelineConfig:
    """A whole run's config from the flags of ``stages`` (the rest: ``base`` or defaults).

    Raises:
        OptionError: naming the flag (a value, or a rule between options).
    """
    values = option_values(args, stages)
    try:
        return pipeline_config(values, **kwargs)
    except OptionError as e:
        raise e.named(flag) from e
