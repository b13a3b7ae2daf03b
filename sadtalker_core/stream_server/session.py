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
import queue
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..config import PipelineConfig
from ..errors import CancelledError
from ..io.video import VideoWriter
from ..stream import StreamBatch
from .protocol import (
    MAX_MESSAGE,
    ProtocolError,
    _header,
    decode_pcm,
    encode_jpeg,
    fail,
    mux_audio,
    pack,
)

AUDIO_QUEUE = 64  # audio messages waiting for the stream
FRAME_QUEUE = 4  # encoded batches waiting for the client
MAX_FACES = 16  # extracted faces kept for face_id
_END = object()


class StreamService:
    """The pipeline, the face cache and the stream slots behind the endpoint.

    Args:
        get_pipeline: returns the (shared) :class:`SadTalkerPipeline`.
        lock: held while a stream renders (a host's GPU queue lock); one stream at a time.
    """

    def __init__(self, get_pipeline: Callable[[], Any], lock: Any = None):
        self.get_pipeline = get_pipeline
        self.lock = lock if lock is not None else threading.Lock()
        self._faces: OrderedDict[str, Any] = OrderedDict()
        self._faces_lock = threading.Lock()
        self.active = 0  # streams running (tests, health)
        self.audio_backlog = 0  # most audio messages ever waiting in one stream's queue

    def face(self, image_b64: str | None, face_id: str | None, cfg: PipelineConfig):
        """(face_id, Face): extracted from the photo, or the cached face of ``face_id``.

        Raises:
            ProtocolError: bad base64, or an unknown face id.
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


def _chunks(audio: queue.Queue, rate: int, cancel: threading.Event) -> Iterator:
    while True:
        item = audio.get()
        if cancel.is_set():
            raise CancelledError("The client cancelled the stream.")
        if item is _END:
            return
        yield item, rate


def _render(service, face, cfg, settings, audio_q, cancel, put) -> None:
    """The worker thread: stream, encode JPEGs and the MP4, hand results to ``put``."""
    pipe = service.get_pipeline()
    folder = Path(tempfile.mkdtemp(prefix="sadtalker-stream-"))
    audio_parts: list[np.ndarray] = []
    try:
        with service.lock:
            service.active += 1
            writer = None
            try:
                batches = pipe.stream(
                    face,
                    _chunks(audio_q, settings["rate"], cancel),
                    cfg,
                    should_cancel=cancel.is_set,
                )
                batch: StreamBatch | None = None
                for batch in batches:
                    if writer is None:
                        writer = VideoWriter(folder / "video.mp4", fps=batch.fps, crf=cfg.crf)
                    writer.write(batch.frames)
                    audio_parts.append(batch.audio)
                    frames = [
                        pack(
                            _header(
                                "frame",
                                index=batch.start + k,
                                t=(batch.start + k) / batch.fps,
                                duration=1.0 / batch.fps,
                            ),
                            encode_jpeg(f, settings["quality"]),
                        )
                        for k, f in enumerate(batch.frames)
                    ]
                    put(frames)
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
            finally:
                service.active -= 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _read_audio(ws, service, settings, audio_q: queue.Queue, cancel) -> None:
    """Client messages -> the audio queue, until end/cancel/disconnect (which cancels)."""
    from starlette.concurrency import run_in_threadpool

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
                    await fail(ws, item["message"], item["code"])
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
