"""One stream of the live endpoint: the face cache and stream slots (:class:`StreamService`), the
worker thread that renders and encodes, and the bounded queues between it and the socket.

Backpressure: audio waits in a bounded queue (:data:`AUDIO_QUEUE` messages) and encoded frames
in another (:data:`FRAME_QUEUE` batches): a slow reader stalls the renderer, a stalled renderer
stops reading the socket, and the client's TCP window fills; memory stays bounded (besides
the MP4 being written to a temporary file).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import queue
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager

import numpy as np

from ..config import PipelineConfig
from ..errors import CancelledError, SadTalkerError
from ..io.video import VideoWriter
from ..stream import StreamBatch
from .protocol import (
    MAX_MESSAGE,
    ProtocolError,
    StreamLimitError,
    _header,
    decode_pcm,
    encode_jpeg,
    fail,
    mux_audio,
    pack,
)

log = logging.getLogger(__name__)

AUDIO_QUEUE = 64  # audio messages waiting for the stream
FRAME_QUEUE = 4  # encoded batches waiting for the client
MAX_FACES = 16  # extracted faces kept for face_id
_END = object()


@dataclass
class JobHooks:
    """What a host gives a stream while it renders (the ``job`` of :class:`StreamService`).

    Attributes:
        should_cancel: True stops the stream (A1111's Interrupt); checked before each batch and
            while the stream waits for audio.
        progress: called with the frames sent so far, after each batch.
    """

    should_cancel: Callable[[], bool] | None = None
    progress: Callable[[int], None] | None = None


@contextlib.contextmanager
def _locked(lock: Any) -> Iterator[JobHooks]:
    with lock:
        yield JobHooks()


class StreamService:
    """The pipeline, the face cache and the stream slots behind the endpoint.

    Args:
        get_pipeline: returns the (shared) :class:`SadTalkerPipeline`.
        lock: held while a stream renders (a host's GPU queue lock); one stream at a time.
        job: in place of ``lock``: returns a context manager held while a stream renders, which
            yields the stream's :class:`JobHooks` (A1111: the host's job, so its Interrupt and
            progress bar reach the stream).
        max_seconds: the longest audio a stream may send, in seconds, or a callable read at
            each stream's start (a setting); None or <= 0: no limit.
        limit_setting, limit_hint: the setting that raises ``max_seconds`` and where it is
            (e.g. ``"Settings > SadTalker"``), named in the error.
        max_photo_mb: the largest start photo, decoded, in MB, or a callable read at each
            stream's start (a setting); None or <= 0: only the message cap :data:`MAX_MESSAGE`.
        photo_setting: the setting that raises ``max_photo_mb`` (in ``limit_hint``).
    """

    def __init__(
        self,
        get_pipeline: Callable[[], Any],
        lock: Any = None,
        *,
        job: Callable[[], ContextManager[JobHooks]] | None = None,
        max_seconds: float | Callable[[], float | None] | None = None,
        limit_setting: str | None = None,
        limit_hint: str | None = None,
        max_photo_mb: float | Callable[[], float | None] | None = None,
        photo_setting: str | None = None,
    ):
        self.get_pipeline = get_pipeline
        self.lock = lock if lock is not None else threading.Lock()
        self.job = job or (lambda: _locked(self.lock))
        self.max_seconds = max_seconds
        self.limit_setting, self.limit_hint = limit_setting, limit_hint
        self.max_photo_mb, self.photo_setting = max_photo_mb, photo_setting
        self._faces: OrderedDict[str, Any] = OrderedDict()
        self._faces_lock = threading.Lock()
        self.active = 0  # streams running (tests, health)
        self.audio_backlog = 0  # most audio messages ever waiting in one stream's queue

    @staticmethod
    def _read_limit(value: Any) -> float | None:
        limit = value() if callable(value) else value
        return float(limit) if limit is not None and float(limit) > 0 else None

    def audio_limit(self) -> float | None:
        """Seconds of audio a stream starting now may send (None: no limit)."""
        return self._read_limit(self.max_seconds)

    def photo_limit(self) -> int | None:
        """Bytes the photo of a stream starting now may decode to (None: no limit of its own)."""
        mb = self._read_limit(self.max_photo_mb)
        return None if mb is None else int(mb * (1 << 20))

    def start_bytes(self, photo_limit: int | None) -> int:
        """The largest start message: the photo limit in base64, plus room for a data: URL
        prefix and the options; :data:`MAX_MESSAGE` without a photo limit."""
        return MAX_MESSAGE if photo_limit is None else (photo_limit + 2) // 3 * 4 + (64 << 10)

    def _past_limit(self, problem: str, ask: str, limit: str, setting: str | None):
        """A limit error: the ``problem``, then what to do (``ask``, or raise ``setting``
        where it is set); its close reason names the ``limit`` and the setting."""
        if not setting:
            return StreamLimitError(f"{problem} {ask}.", None, limit)
        where = f" in {self.limit_hint}" if self.limit_hint else ""
        return StreamLimitError(
            f"{problem} {ask}, or raise the limit{where} ('{setting}').",
            setting,
            f"{limit} ('{setting}')",
        )

    def too_long(self, limit: float) -> StreamLimitError:
        """The error of a stream whose audio passed ``limit`` seconds."""
        return self._past_limit(
            f"The audio of this stream lasts longer than the limit of {limit:g} s.",
            "End the stream sooner",
            f"Audio past the {limit:g} s limit",
            self.limit_setting,
        )

    def photo_too_large(self, size: int) -> StreamLimitError:
        """The error of a start photo of ``size`` bytes (decoded) past :meth:`photo_limit`."""
        mb = self._read_limit(self.max_photo_mb) or MAX_MESSAGE * 3 / 4 / (1 << 20)
        return self._past_limit(
            f"The photo of this stream is {size / (1 << 20):.3g} MB; the limit is {mb:g} MB.",
            "Send a smaller photo (a PNG or JPEG of the face is enough)",
            f"Photo past the {mb:g} MB limit",
            self.photo_setting,
        )

    def face(
        self,
        image_b64: str | None,
        face_id: str | None,
        cfg: PipelineConfig,
        photo_limit: int | None = None,
    ):
        """(face_id, Face): extracted from the photo, or the cached face of ``face_id``.

        Raises:
            ProtocolError: bad base64, or an unknown face id.
            StreamLimitError: the photo decodes to more than ``photo_limit`` bytes.
            InvalidImageError / NoFaceDetectedError: from the extraction.
        """
        if face_id is not None:
            with self._faces_lock:
                face = self._faces.get(str(face_id))
            if face is None:
                raise ProtocolError(
                    f"Unknown face_id {face_id!r} (faces are kept for the last {MAX_FACES} "
                    'photos of this server): send the photo as "image".'
                )
            return str(face_id), face
        if not isinstance(image_b64, str):
            raise ProtocolError('"image" must be a base64 string of a PNG or JPEG photo.')
        try:
            data = base64.b64decode(image_b64.split(",", 1)[-1], validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError('"image" is not valid base64 (a data: URL is fine).') from None
        if photo_limit is not None and len(data) > photo_limit:
            raise self.photo_too_large(len(data))
        key = hashlib.sha256(data + repr(cfg.extract).encode()).hexdigest()[:24]
        with self._faces_lock:
            face = self._faces.get(key)
        if face is None:
            face = self.get_pipeline().extract(data, cfg)
            with self._faces_lock:
                self._faces[key] = face
                while len(self._faces) > MAX_FACES:
                    self._faces.popitem(last=False)
        return key, face


def _chunks(audio: queue.Queue, rate: int, cancel: threading.Event, hooks: JobHooks) -> Iterator:
    """The audio queue as the stream's chunks; waits for audio, but not past a cancel."""
    while True:
        try:
            item = audio.get(timeout=0.25)
        except queue.Empty:
            item = None
        if cancel.is_set():
            raise CancelledError("The client cancelled the stream.")
        if hooks.should_cancel is not None and hooks.should_cancel():
            raise CancelledError("the stream was stopped while it waited for audio.")
        if item is _END:
            return
        if item is not None:
            yield item, rate


def _work(service, face, cfg, settings, audio_q, cancel, put) -> None:
    """The worker thread's body: :func:`_render`, its errors as error items, then None."""
    try:
        _render(service, face, cfg, settings, audio_q, cancel, put)
    except CancelledError as e:
        if not cancel.is_set():  # not the client: stopped on the server (A1111's Interrupt)
            put({"type": "error", "message": f"Interrupted on the server: {e}", "code": 1000})
    except (SadTalkerError, ValueError) as e:
        put({"type": "error", "message": str(e), "code": 1008})
    except Exception as e:  # noqa: BLE001 - reported to the client, logged here
        log.exception("stream failed")
        put({"type": "error", "message": f"Server error: {e}", "code": 1011})
    finally:
        with contextlib.suppress(RuntimeError):
            put(None)


def _render(service, face, cfg, settings, audio_q, cancel, put) -> None:
    """The worker thread: stream under the service's job, hand encoded results to ``put``."""
    pipe = service.get_pipeline()
    folder = Path(tempfile.mkdtemp(prefix="sadtalker-stream-"))
    try:
        with service.job() as hooks:
            service.active += 1
            try:

                def stop() -> bool:
                    return cancel.is_set() or bool(hooks.should_cancel and hooks.should_cancel())

                chunks = _chunks(audio_q, settings["rate"], cancel, hooks)
                batches = pipe.stream(face, chunks, cfg, should_cancel=stop)
                _send_batches(batches, folder, cfg, settings["quality"], put, hooks.progress)
            finally:
                service.active -= 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _send_batches(batches, folder: Path, cfg, quality: int, put, progress) -> None:
    """Each batch's frames as JPEG messages, then the complete MP4 and done."""
    writer = None
    audio_parts: list[np.ndarray] = []
    batch: StreamBatch | None = None
    try:
        for batch in batches:
            if writer is None:
                writer = VideoWriter(folder / "video.mp4", fps=batch.fps, crf=cfg.crf)
            writer.write(batch.frames)
            audio_parts.append(batch.audio)
            put([_frame_message(batch, k, f, quality) for k, f in enumerate(batch.frames)])
            if progress is not None:
                progress(batch.stop)
        if writer is None or batch is None:
            raise CancelledError("The stream ended without frames.")
        video = writer.close()
        out = folder / "clip.mp4"
        mux_audio(video, np.concatenate(audio_parts), 16000, out)
        seconds = batch.t1
        header = _header("video", frames=batch.stop, seconds=seconds)
        put([pack(header, out.read_bytes())])
        put({"type": "done", "frames": batch.stop, "seconds": seconds})
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _frame_message(batch: StreamBatch, k: int, frame: np.ndarray, quality: int) -> bytes:
    index = batch.start + k
    header = _header("frame", index=index, t=index / batch.fps, duration=1.0 / batch.fps)
    return pack(header, encode_jpeg(frame, quality))


async def _read_audio(ws, service, settings, audio_q: queue.Queue, cancel) -> None:
    """Client messages -> the audio queue, until end/cancel/disconnect (which cancels)."""
    from starlette.concurrency import run_in_threadpool

    received = 0  # sample frames
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                cancel.set()
                break
            data, text = msg.get("bytes"), msg.get("text")
            if data is not None:
                if len(data) > MAX_MESSAGE:
                    raise ProtocolError(f"An audio message is larger than {MAX_MESSAGE >> 20} MB.")
                pcm = decode_pcm(data, settings["dtype"], settings["channels"])
                received += pcm.shape[0]
                limit = settings.get("max_seconds")
                if limit is not None and received > limit * settings["rate"]:
                    raise service.too_long(limit)
                if pcm.shape[0]:
                    service.audio_backlog = max(service.audio_backlog, audio_q.qsize())
                    while not cancel.is_set():  # bounded: waits while the stream is behind
                        try:
                            await run_in_threadpool(audio_q.put, pcm, True, 0.5)
                            break
                        except queue.Full:
                            continue
                continue
            try:
                kind = json.loads(text).get("type")
            except (ValueError, AttributeError):
                kind = None
            if kind == "end":
                await run_in_threadpool(audio_q.put, _END)
                return
            if kind == "cancel":
                cancel.set()
                return
            raise ProtocolError(
                f'Expected binary PCM audio, {{"type": "end"}} or {{"type": "cancel"}}, got '
                f"{text[:60]!r}."
            )
    finally:
        if cancel.is_set():
            with contextlib.suppress(queue.Full):
                audio_q.put_nowait(_END)


async def _send_results(ws, out_q: asyncio.Queue, reader: asyncio.Task) -> None:
    """Worker results -> the client, until the worker's last item; a reader error (garbage from
    the client) is raised here."""
    watching = reader
    try:
        while True:
            getter = asyncio.ensure_future(out_q.get())
            done, _ = await asyncio.wait({getter, watching}, return_when=asyncio.FIRST_COMPLETED)
            if watching in done and getter not in done:
                error = watching.exception()
                if error is not None:
                    getter.cancel()
                    raise error
                watching = asyncio.ensure_future(asyncio.Event().wait())  # reading is over
                await getter
            item = getter.result()
            if item is None:
                break
            if isinstance(item, dict):
                if item["type"] == "error":
                    await fail(ws, item["message"], item["code"], item.get("setting"))
                    return
                await ws.send_json(item)
                continue
            for message in item:
                await ws.send_bytes(message)
        with contextlib.suppress(RuntimeError):
            await ws.close()
    finally:
        reader.cancel()
        if watching is not reader:
            watching.cancel()
