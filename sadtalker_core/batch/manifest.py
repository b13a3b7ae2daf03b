"""The job manifest: one JSON line per finished clip, appended as clips finish (resumable runs)."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from ..errors import SadTalkerError
from .jobs import DONE, ClipResult, Job

log = logging.getLogger(__name__)


class Manifest:
    """``clip, status, output, error, seconds`` (+ frames, bytes, attempts, worker, face) per
    line; the last line of a clip wins. Lines are flushed and fsynced one by one, so a run that
    stops (Ctrl-C, a crash) keeps every line written before; a torn last line is ignored.

    Args:
        path: the ``.jsonl`` file (created with its folder; existing lines are kept).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.records: dict[str, dict] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    try:
                        rec = json.loads(line)
                        self.records[str(rec["clip"])] = rec
                    except (ValueError, KeyError, TypeError):
                        log.warning("%s line %d is not a manifest record: ignored", self.path, n)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            open(self.path, "a").close()
        except OSError as e:
            raise SadTalkerError(
                f"Cannot write the batch manifest {self.path} ({e}); give a writable path with "
                "--manifest FILE."
            ) from e

    def append(self, result: ClipResult) -> None:
        rec = result.record()
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        with self._lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self.records[result.clip] = rec

    def complete(self, job: Job) -> bool:
        """True when the manifest says ``job`` was written and the file still is that video:
        same size, and it opens with the recorded number of video frames."""
        rec = self.records.get(job.clip)
        if not rec or rec.get("status") != DONE:
            return False
        return video_matches(job.output, int(rec.get("bytes", -1)), int(rec.get("frames", -1)))


def video_frames(path: Path) -> int:
    """Video frames of an MP4 as its header states them (0 when it cannot be read)."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return 0
            stream = c.streams.video[0]
            return int(stream.frames) or sum(1 for _ in c.demux(stream) if _.size)
    except (OSError, av.FFmpegError):
        return 0


def video_matches(path: Path, size: int, frames: int) -> bool:
    try:
        if path.stat().st_size != size:
            return False
    except OSError:
        return False
    return frames > 0 and video_frames(path) == frames
