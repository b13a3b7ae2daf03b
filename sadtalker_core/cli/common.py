"""What every command shares: terminal output, progress bars, the checkpoint folders."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..models.locate import ENV_DEFAULT_CHECKPOINTS, default_checkpoint_dirs

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
