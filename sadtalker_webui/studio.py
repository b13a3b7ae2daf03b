"""One generation as the tab and the API run it: options -> config, the resident pipeline, the
results folder, memory sharing with the host, the history of the last results."""

from __future__ import annotations

import datetime
import gc
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sadtalker_core import (
    CancelledError,
    InvalidImageError,
    SadTalkerError,
    SadTalkerPipeline,
    check_inputs,
)
from sadtalker_core.pipeline import estimate_memory

from . import host
from .options import pipeline_config

log = logging.getLogger(__name__)

HISTORY_LENGTH = 8
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class Result:
    """A finished clip."""

    path: Path
    frames: int
    fps: float
    seconds: float
    has_audio: bool
    options: dict = field(default_factory=dict)
    created: str = ""

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "frames": self.frames,
            "fps": self.fps,
            "seconds": round(self.seconds, 3),
            "has_audio": self.has_audio,
        }


def probe_video(path: Path) -> tuple[int, float, float, bool]:
    """(frames, fps, seconds, has_audio) of an MP4, read back from the file."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.base_rate or 0)
        frames = stream.frames or sum(1 for _ in container.decode(stream))
        has_audio = bool(container.streams.audio)
    return frames, fps, frames / fps if fps else 0.0, has_audio


class Studio:
    """The pipeline (built once, kept across clicks) and the last results.

    Only one generation runs at a time: callers hold the host's queue lock.
    """

    def __init__(self):
        self._pipe: SadTalkerPipeline | None = None
        self._pipe_key: tuple | None = None
        self.pipelines_built = 0
        self.history: deque[Result] = deque(maxlen=HISTORY_LENGTH)
        self._names = threading.Lock()

    def checkpoint_dirs(self) -> list[Path]:
        """The weights folder setting first, then the core's usual places."""
        from sadtalker_core import default_checkpoint_dirs

        return default_checkpoint_dirs([host.weights_dir()])

    def pipeline(self) -> SadTalkerPipeline:
        key = (tuple(self.checkpoint_dirs()), str(host.device()))
        if self._pipe is None or self._pipe_key != key:
            self.release()
            self._pipe = SadTalkerPipeline(checkpoint_dirs=list(key[0]), device=host.device())
            self._pipe_key = key
            self.pipelines_built += 1
            log.info("SadTalker: pipeline on %s, weights from %s", self._pipe.device, key[0][0])
        return self._pipe

    def release(self) -> None:
        """Drop the networks (the setting "keep models loaded" off, or another weights folder)."""
        if self._pipe is None:
            return
        self._pipe.release()
        self._pipe, self._pipe_key = None, None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def output_path(self, source: Any) -> Path:
        """A new file name under today's results folder: ``<HHMMSS>_<picture name>.mp4``."""
        folder = host.results_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stem = Path(source).stem if isinstance(source, (str, os.PathLike)) else "sadtalker"
        stamp = datetime.datetime.now().strftime("%H%M%S")
        with self._names:
            for n in range(10000):
                path = folder / f"{stamp}_{stem}{'' if n == 0 else f'_{n}'}.mp4"
                if not path.exists():
                    return path
        raise SadTalkerError(f"No free file name in {folder}.")

    def generate(
        self,
        source_image: Any,
        driven_audio: Any,
        values: Mapping[str, Any],
        ref_eyeblink: str | os.PathLike | None = None,
        ref_pose: str | os.PathLike | None = None,
        progress: Progress | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> Result:
        """Render one clip into the results folder; caller holds the queue lock.

        Raises:
            OptionError: a bad option. SadTalkerError: no face, bad audio, missing weights...
            CancelledError: ``should_cancel`` said stop; no file is left behind.
        """
        defaults = {
            "detector": host.opt("sadtalker_detector"),
            "precision": host.opt("sadtalker_precision"),
        }
        config, values = pipeline_config(
            values, {k: v for k, v in defaults.items() if v}, audio=driven_audio is not None
        )
        if source_image is None:
            raise InvalidImageError("Give a source picture with a face.")
        # every input file before any network loads (reference videos included)
        check_inputs(source_image, driven_audio, ref_eyeblink, ref_pose)
        cancel = should_cancel or (lambda: False)

        def report(stage: str, done: int, total: int) -> None:
            if cancel():
                raise CancelledError("Interrupted: no video was written.")
            if progress is not None:
                progress(stage, done, total)

        out = self.output_path(source_image)
        pipe = self.pipeline()
        give_back = host.make_room(pipe.device, estimate_memory(config))
        try:
            with host.torch_own_loader():
                blink_rows = self._reference(pipe, ref_eyeblink, config, report)
                pose_rows = self._reference(pipe, ref_pose, config, report)
                report("start", 0, 1)
                path = pipe.run(
                    source_image,
                    driven_audio,
                    out,
                    config,
                    ref_eyeblink=blink_rows,
                    ref_pose=pose_rows,
                    progress=report,
                    should_cancel=cancel,
                )
        except CancelledError:
            raise CancelledError("Interrupted: no video was written.") from None
        finally:
            self._after_run(give_back)
        frames, fps, seconds, has_audio = probe_video(Path(path))
        result = Result(
            Path(path),
            frames,
            fps,
            seconds,
            has_audio,
            values,
            datetime.datetime.now().isoformat(timespec="seconds"),
        )
        self.history.appendleft(result)
        return result

    def _reference(self, pipe, video, config, report) -> Any:
        """Per-frame coefficient rows of a reference video (head pose or blinks), or None."""
        if not video:
            return None
        report("reference", 0, 1)
        return pipe.reference_rows(Path(video), config)

    def _after_run(self, give_back: Callable[[], None] | None) -> None:
        """Keep, offload or drop our networks; then give the host's model its memory back."""
        if not host.opt("sadtalker_keep_loaded", True):
            self.release()
        elif give_back is not None and self._pipe is not None:
            self._pipe.offload()
        if give_back is not None:
            give_back()


STUDIO = Studio()
