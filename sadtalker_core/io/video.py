"""Video files through PyAV's bundled FFmpeg: the streaming MP4 writer (H.264 yuv420p + AAC,
atomic on disk) and frame-by-frame reading (``read_frames``, ``video_info``)."""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import weakref
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InvalidImageError, SadTalkerError
from .frames import pad_to_even

log = logging.getLogger(__name__)

AAC_FRAME = 1024  # samples per AAC frame

# Partial files of the writers that are open now (removed by discard_partial_files on a signal).
_PARTIALS: set[Path] = set()
_PARTIALS_LOCK = threading.RLock()  # re-entrant: a signal handler may run while it is held
_SIGNALS_HOOKED: set[int] = set()


def _discard(tmp: Path) -> None:
    """Delete one partial file (a writer's finalizer: at close, abort, garbage collection or
    interpreter exit, whichever comes first)."""
    with _PARTIALS_LOCK:
        _PARTIALS.discard(tmp)
    try:
        tmp.unlink(missing_ok=True)
    except OSError as e:  # still open elsewhere (Windows): nothing better to do at exit
        log.debug("could not remove %s: %s", tmp, e)


def discard_partial_files() -> int:
    """Delete the partial file of every open :class:`VideoWriter` (the process is stopping).
    Returns how many were removed; the writers themselves fail at close if they go on."""
    with _PARTIALS_LOCK:
        partials = list(_PARTIALS)
    for tmp in partials:
        _discard(tmp)
    return len(partials)


def discard_partials_on_signals(signals: tuple[int, ...] | None = None) -> bool:
    """Make a termination signal remove the partial videos before the process stops.

    For hosts whose shutdown skips Python's exit handlers (ComfyUI and A1111 die on SIGTERM with
    the default action; A1111 leaves on SIGINT through ``os._exit``). The handler deletes every
    open writer's partial file, then does what was there before: the default action (the
    process ends with the signal), the previous handler, or nothing when the signal was ignored.
    Call it from the main thread (signal handlers can only be set there); returns False
    elsewhere. Installing twice is harmless. Writers remove their partial file at a normal
    interpreter exit without it.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signals is None:
        signals = tuple(
            getattr(signal, name)
            for name in ("SIGTERM", "SIGINT", "SIGHUP")
            if hasattr(signal, name)
        )
    for sig in signals:
        if sig in _SIGNALS_HOOKED:
            continue
        previous = signal.getsignal(sig)
        if previous is signal.SIG_IGN or previous is None:
            continue  # ignored, or set outside Python: leave it alone

        def handler(signum, frame, previous=previous):
            if previous is signal.default_int_handler:
                previous(signum, frame)  # KeyboardInterrupt: the writers clean up as they unwind
                return
            discard_partial_files()
            if callable(previous):
                previous(signum, frame)
            else:  # SIG_DFL: end as the signal would have ended us
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, handler)
        _SIGNALS_HOOKED.add(sig)
    return True


class VideoWriter:
    """Write frames as they are rendered; the file appears under its name only when complete.

    Frames go to ``.<name>.<pid>.partial.mp4`` beside the target and are renamed by
    :meth:`close`. Any exception inside a ``with`` block (an error, a cancel, Ctrl-C, the
    ``SystemExit`` of a signal handler) or :meth:`abort` deletes the partial file, and so do
    garbage collection and interpreter exit for a writer left open; so a stopped run never leaves
    a half-written video (for hosts killed by a signal see :func:`discard_partials_on_signals`). The audio track is encoded
    alongside the frames and ends exactly with the last frame (cut, or padded with silence).

    Args:
        path: output ``.mp4`` path.
        fps: frame rate (float or Fraction; 25, 24, 30, 29.97...).
        audio: optional (N,) float32 mono waveform in [-1, 1].
        sample_rate: Hz of ``audio``.
        crf: x264 constant rate factor (0 lossless .. 51 worst; 18 is visually lossless).
        preset: x264 speed preset.
        background: encode in a worker thread so that encoding overlaps rendering; at most
            ``queue_size`` batches wait, so memory stays bounded.
        queue_size: batches buffered for the worker.

    Convention:
        Frames are (H, W, 3) or (B, H, W, 3) uint8 RGB. Odd sizes are padded by repeating the last
        row/column to the even size yuv420p needs (never resized).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction = 25,
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        crf: int = 18,
        preset: str = "medium",
        background: bool = True,
        queue_size: int = 4,
    ):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(
            f".{self.path.stem}.{os.getpid()}.partial{self.path.suffix or '.mp4'}"
        )
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf, self.preset = int(crf), preset
        self.frames_written = 0
        self.tmp.touch()  # FFmpeg creates the file with its first packet; it is ours from now on
        self._container = av.open(str(self.tmp), mode="w", format="mp4")
        with _PARTIALS_LOCK:
            _PARTIALS.add(self.tmp)
        self._finalizer = weakref.finalize(self, _discard, self.tmp)
        self._video = None
        self._size: tuple[int, int] | None = None
        self._audio = None
        self._samples = None
        self._sample_rate = int(sample_rate)
        self._audio_pos = 0
        if audio is not None:
            samples = np.asarray(audio, dtype=np.float32).reshape(-1)
            self._samples = np.clip(samples, -1.0, 1.0)
            self._audio = self._container.add_stream("aac", rate=self._sample_rate)
            self._audio.layout = "mono"
        self._closed = False
        self._error: BaseException | None = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(maxsize=max(1, queue_size))
            self._thread = threading.Thread(
                target=self._worker, name="sadtalker-encoder", daemon=True
            )
            self._thread.start()

    def _worker(self) -> None:
        while True:
            frames = self._queue.get()
            if frames is None:
                return
            if self._error is not None:
                continue  # drain after a failure; the error is raised in the caller's thread
            try:
                self._encode(frames)
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                self._error = e

    def _check_worker(self) -> None:
        if self._error is not None:
            raise SadTalkerError(
                f"Encoding {self.path.name} failed: {self._error}"
            ) from self._error

    def _stop_worker(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open_video(self, h: int, w: int) -> None:
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = w + (w % 2), h + (h % 2)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._video = stream

    def write(self, frames: np.ndarray) -> None:
        """Append one (H, W, 3) frame or a (B, H, W, 3) batch of uint8 RGB frames."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise SadTalkerError(
                f"VideoWriter expects uint8 (B, H, W, 3) frames; got {frames.dtype} {frames.shape}."
            )
        if self._size is None:
            self._size = tuple(frames.shape[1:3])
        if frames.shape[1:3] != self._size:
            raise SadTalkerError(
                f"Frame size changed from {self._size} to {frames.shape[1:3]} within one video."
            )
        if self._thread is not None:
            self._check_worker()
            self._queue.put(frames)
        else:
            self._encode(frames)

    def _encode(self, frames: np.ndarray) -> None:
        import av

        if self._video is None:
            self._open_video(*self._size)
        frames = pad_to_even(frames)
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = self.frames_written
            vf.time_base = 1 / self.fps
            for packet in self._video.encode(vf):
                self._container.mux(packet)
            self.frames_written += 1
        self._feed_audio(final=False)

    def _feed_audio(self, final: bool) -> None:
        """Encode audio up to the end of the frames written so far (exactly, at close)."""
        import av

        if self._audio is None:
            return
        target = int(round(self.frames_written / self.fps * self._sample_rate))
        end = target if final else target - target % AAC_FRAME
        while self._audio_pos < end:
            n = min(AAC_FRAME, end - self._audio_pos)
            chunk = self._samples[self._audio_pos : self._audio_pos + n]
            if len(chunk) < n:  # audio shorter than the video: pad with silence
                chunk = np.pad(chunk, (0, n - len(chunk)))
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            af.sample_rate = self._sample_rate
            af.pts = self._audio_pos
            af.time_base = Fraction(1, self._sample_rate)
            for packet in self._audio.encode(af):
                self._container.mux(packet)
            self._audio_pos += n

    def close(self) -> Path:
        """Flush the encoders, finish the file and move it to its final name."""
        if self._closed:
            return self.path
        try:
            self._stop_worker()
            self._check_worker()
        except BaseException:
            self.abort()
            raise
        if self.frames_written == 0:
            self.abort()
            raise SadTalkerError(f"No frames were written to {self.path}; nothing to save.")
        try:
            self._feed_audio(final=True)
            for stream in (self._video, self._audio):
                if stream is not None:
                    for packet in stream.encode(None):
                        self._container.mux(packet)
            self._container.close()
            self._closed = True
            if not self.tmp.exists():
                raise SadTalkerError(
                    f"The partial file of {self.path.name} was removed while it was written "
                    "(the process is stopping); nothing was saved."
                )
            os.replace(self.tmp, self.path)
            self._finalizer.detach()
            with _PARTIALS_LOCK:
                _PARTIALS.discard(self.tmp)
        except BaseException:
            self.abort()
            raise
        log.info("wrote %s: %d frames at %s fps", self.path, self.frames_written, float(self.fps))
        return self.path

    def abort(self) -> None:
        """Stop and delete the partial file (safe to call more than once)."""
        if self._thread is not None:
            self._error = self._error or SadTalkerError("aborted")  # the worker drops the rest
            self._stop_worker()
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except Exception as e:  # noqa: BLE001 - a broken encoder must not mask the real error
                log.debug("closing the aborted container failed: %s", e)
        self._finalizer()  # deletes the partial file (once)


def video_info(path: str | os.PathLike) -> tuple[float, int]:
    """(frame rate, frame count; 0 when the container does not say) of a video file.

    Raises:
        InvalidImageError: unreadable, or without a video stream.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InvalidImageError(
                    f"'{path}' has no video stream; give a video file (e.g. for the reference)."
                )
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 25
            return float(rate), int(stream.frames or 0)
    except (av.error.FFmpegError, OSError) as e:
        raise InvalidImageError(f"Video '{path}' cannot be read ({e}).") from e


def read_frames(path: str | os.PathLike, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video frame by frame as upright (H, W, 3) uint8 RGB (display rotation applied),
    stopping after ``max_frames`` frames (None = all).

    Raises:
        InvalidImageError: the video is damaged after some frames.
    """
    import av

    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                rotation = getattr(frame, "rotation", 0) or 0  # degrees counter-clockwise
                quarter_turns = round(rotation / 90) % 4
                if quarter_turns:
                    rgb = np.ascontiguousarray(np.rot90(rgb, quarter_turns))
                yield rgb
                count += 1
                if max_frames is not None and count >= max_frames:
                    return
        except av.error.FFmpegError as e:
            raise InvalidImageError(
                f"Video '{path}' is damaged after frame {count} ({e}). Re-encode it."
            ) from e
