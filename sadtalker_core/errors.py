"""Error types of sadtalker_core: every message names the problem and the fix."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path


class SadTalkerError(Exception):
    """Base class of every error sadtalker_core raises on purpose."""


class ModelNotFoundError(SadTalkerError, FileNotFoundError):
    """A required checkpoint file is in none of the searched folders."""

    def __init__(self, name: str, searched: Sequence[Path], hint: str = ""):
        self.name = name
        self.searched = [Path(p) for p in searched]
        where = "\n".join(f"  - {p}" for p in self.searched) or "  (no folder configured)"
        msg = f"Checkpoint '{name}' was not found. Searched:\n{where}"
        if hint:
            msg += f"\n{hint}"
        super().__init__(msg)


class UnsupportedCheckpointError(SadTalkerError, ValueError):
    """A checkpoint file exists but is truncated, corrupt, or holds another architecture."""


class MissingDependencyError(SadTalkerError, ImportError):
    """An optional Python package is needed for the requested feature."""

    def __init__(self, package: str, feature: str):
        self.package = package
        super().__init__(
            f"{feature} needs the Python package '{package}'. Install it with: pip install {package}"
        )


class ShapeError(SadTalkerError, ValueError):
    """A tensor or array does not have the documented shape."""


class InvalidImageError(SadTalkerError, ValueError):
    """An input image cannot be read or is unusable."""


class InvalidVideoError(InvalidImageError):
    """A reference video (head pose, blinks) is missing, unreadable or holds no picture track."""


class NoFaceDetectedError(SadTalkerError, ValueError):
    """No face was found where one is required."""


class InvalidAudioError(SadTalkerError, ValueError):
    """An audio input cannot be read or is unusable (corrupt, silent, too short)."""


class CancelledError(SadTalkerError):
    """The caller's progress callback asked to stop."""


class DownloadError(SadTalkerError, OSError):
    """A file could not be fetched; the message lists what to download by hand and where."""


class OptionError(SadTalkerError, ValueError):
    """An option is unknown, of the wrong type, out of range, or in a combination the stages
    refuse. ``options`` are the names involved (the first is the one to change); the message
    spells them as the host does (:meth:`named`): ``pose_style`` in the library, ``--pose_style``
    on the command line, ``'pose_style'`` in the web UI.

    Args:
        template: the message with ``{0}``, ``{1}``... where the option names go.
        options: the option names, in placeholder order.
    """

    def __init__(self, template: str, *options: str):
        self.template, self.options = template, options
        super().__init__(template.format(*options))

    @property
    def option(self) -> str:
        """The option to change."""
        return self.options[0]

    def named(self, label: Callable[[str], str]) -> OptionError:
        """The same error with each option name spelled by ``label`` (e.g. ``"--{}".format``)."""
        error = OptionError(self.template, *self.options)
        error.args = (self.template.format(*(label(o) for o in self.options)),)
        error.__cause__ = self.__cause__
        return error
