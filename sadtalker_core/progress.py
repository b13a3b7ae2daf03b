"""The one progress and cancel protocol of every stage and of the pipeline.

- A stage reports ``progress(done, total)`` (:data:`Progress`) after each unit of work (a batch
  of frames, a chunk of audio); the pipeline reports ``progress(stage, done, total)``
  (:data:`StageProgress`) with the stage's name.
- The library's own entry points (:meth:`SadTalkerPipeline.run` and ``render_to_file``) also
  take ``progress=True`` (a tqdm bar per stage on stderr) or ``False`` (silent); by default
  (None) they draw the bar in an interactive session (a terminal, IPython or Jupyter) and stay
  silent otherwise (:func:`run_progress`).
- Cancelling: a long loop calls ``should_cancel()`` (:data:`ShouldCancel`) before each unit and
  stops with :class:`~sadtalker_core.errors.CancelledError` when it returns True. A host whose
  progress hook raises its own interrupt exception (ComfyUI) may raise from ``progress`` or
  ``should_cancel`` instead: the exception propagates unchanged and no output file is left.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sized
from typing import TypeVar, Union

from .errors import CancelledError

Progress = Callable[[int, int], None]  # (done, total) of one stage
StageProgress = Callable[[str, int, int], None]  # (stage, done, total) of a whole run
ShouldCancel = Callable[[], bool]
RunProgress = Union[StageProgress, bool, None]  # a callback, True (bar), False, None (auto)

STAGE_UNITS = {"render": "frame", "coefficients": "step"}

Batch = TypeVar("Batch", bound=Sized)  # a batch of frames: len() is its frame count


def interactive() -> bool:
    """True in a terminal (stderr is a tty), an IPython shell or a Jupyter kernel."""
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # replaced or closed stream
        pass
    ipython = sys.modules.get("IPython")
    try:
        return ipython is not None and ipython.get_ipython() is not None
    except Exception:  # noqa: BLE001 - a broken IPython install: not interactive
        return False


class ProgressBar:
    """A :data:`StageProgress` drawing one tqdm bar per stage on stderr (a notebook bar in
    Jupyter); each bar closes when its stage completes. tqdm is imported on first use."""

    def __init__(self, file=None):
        self.file = file
        self._bar = None
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage or self._bar is None:
            self.close()
            self._stage = stage
            self._bar = self._new_bar(stage, total)
        self._bar.update(done - self._bar.n)
        if total and done >= total:
            self.close()

    def _new_bar(self, stage: str, total: int):
        if self.file is None and not _stderr_is_tty() and "ipykernel" in sys.modules:
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        return tqdm(
            total=total or None,
            desc=stage,
            unit=STAGE_UNITS.get(stage, "it"),
            file=self.file or sys.stderr,
            leave=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def run_progress(progress: RunProgress) -> StageProgress | None:
    """The ``(stage, done, total)`` callback of a run's ``progress=`` argument: a callback as
    it is, ``True`` a :class:`ProgressBar`, ``False`` none, ``None`` a bar when
    :func:`interactive`."""
    if progress is None:
        progress = interactive()
    if progress is True:
        return ProgressBar()
    if progress is False:
        return None
    if callable(progress):
        return progress
    raise TypeError(
        f"progress must be a callback (stage, done, total), True, False or None; got "
        f"{type(progress).__name__}."
    )


def check_cancel(should_cancel: ShouldCancel | None, message: str = "Cancelled.") -> None:
    """Raise ``CancelledError(message)`` when ``should_cancel()`` says so."""
    if should_cancel is not None and should_cancel():
        raise CancelledError(message)


def stage_progress(progress: StageProgress | None, stage: str) -> Progress | None:
    """A stage's ``(done, total)`` callback reporting to a run's ``(stage, done, total)`` one."""
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total)


def batch_done(
    batch: Batch,
    done: int,
    total: int,
    progress: Progress | None,
    on_batch: Callable[[Batch, int, int], None] | None,
) -> int:
    """The end of one step of a frame loop, before the loop hands ``batch`` over: count its
    frames, report ``progress(done, total)`` (the batch is finished), then give it to
    ``on_batch(batch, done, total)`` (live previews). Returns the new ``done``."""
    done += len(batch)
    if progress is not None:
        progress(done, total)
    if on_batch is not None:
        on_batch(batch, done, total)
    return done
