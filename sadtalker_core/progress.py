"""The one progress and cancel protocol of every stage and of the pipeline.

- A stage reports ``progress(done, total)`` (:data:`Progress`) after each unit of work (a batch
  of frames, a chunk of audio); the pipeline reports ``progress(stage, done, total)``
  (:data:`StageProgress`) with the stage's name.
- Cancelling: a long loop calls ``should_cancel()`` (:data:`ShouldCancel`) before each unit and
  stops with :class:`~sadtalker_core.errors.CancelledError` when it returns True. A host whose
  progress hook raises its own interrupt exception (ComfyUI) may raise from ``progress`` or
  ``should_cancel`` instead: the exception propagates unchanged and no output file is left.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import CancelledError

Progress = Callable[[int, int], None]  # (done, total) of one stage
StageProgress = Callable[[str, int, int], None]  # (stage, done, total) of a whole run
ShouldCancel = Callable[[], bool]


def check_cancel(should_cancel: ShouldCancel | None, message: str = "Cancelled.") -> None:
    """Raise ``CancelledError(message)`` when ``should_cancel()`` says so."""
    if should_cancel is not None and should_cancel():
        raise CancelledError(message)


def stage_progress(progress: StageProgress | None, stage: str) -> Progress | None:
    """A stage's ``(done, total)`` callback reporting to a run's ``(stage, done, total)`` one."""
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total)
