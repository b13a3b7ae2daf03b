"""The live WebSocket endpoint ``/sadtalker/v1/stream``: one FastAPI router, mounted by the
A1111/Forge API (``sadtalker_webui/api.py``) and by ``sadtalker serve`` (``cli/serve.py``).

Protocol (one stream per connection):

client -> server
    1. text ``{"type": "start", "image": "<base64 PNG/JPEG>" | "face_id": "<id from a ready>",
       "sample_rate": 48000, "format": "f32le" | "s16le", "channels": 1, "options": {...}}``;
       options: :data:`OPTIONS` (coefficient, render and extract options of the pipeline, and
       ``jpeg_quality``).
    2. binary messages: raw interleaved PCM in the declared format, any length (whole samples).
    3. text ``{"type": "end"}`` (the speech is complete) or ``{"type": "cancel"}``.

server -> client
    - text ``{"type": "ready", "face_id", "fps", "lookahead_ms"}`` after the
      face is extracted (send audio after it; earlier audio is kept too);
    - binary messages: a 4-byte big-endian header length, a UTF-8 JSON header, then the payload:
      ``{"type": "frame", "index", "t", "duration"}`` + a JPEG per frame, as soon as the
      frame is final; at the end ``{"type": "video", "frames", "seconds"}`` + the complete MP4
      (H.264 + AAC, the offline clip);
    - text ``{"type": "done", "frames", "seconds"}`` last; ``{"type": "error", "message"}`` then
      a close (code 1008 for bad input, 1011 for a server failure) on an error.

Why JPEG frames and not fragmented MP4: every frame stands alone, so a browser shows it the
moment it arrives (an ``<img>``/canvas, no Media Source Extensions, no H.264 decoder needed:
Chromium builds without proprietary codecs cannot play H.264 through MSE), nothing is lost when
a client joins late or drops a frame, and the encoder adds no delay (an H.264 encoder holds
frames for its lookahead and B-frames, a fragment holds a group of pictures). At 256 px a
frame is 10-20 KB; the complete MP4 comes once at the end.

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
import io
import json
import logging
import queue
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .config import CoeffConfig, ExtractConfig, PipelineConfig, RenderConfig
from .errors import CancelledError, MissingDependencyError, SadTalkerError
from .io.video import VideoWriter
from .stream import StreamBatch, check_stream_config, lookahead_ms

log = logging.getLogger(__name__)

PATH = "/sadtalker/v1/stream"
AUDIO_QUEUE = 64  # audio messages waiting for the stream
FRAME_QUEUE = 4  # encoded batches waiting for the client
MAX_MESSAGE = 8 << 20  # bytes: larger messages (start photo, audio) are refused
MAX_FACES = 16  # extracted faces kept for face_id
FORMATS = {"f32le": np.dtype("<f4"), "s16le": np.dtype("<i2")}
OPTIONS = {  # start option -> (config part, field)
    "preprocess": ("extract", "preprocess"),
    "size": ("extract", "size"),
    "face_index": ("extract", "face_index"),
    "detector": ("extract", "detector"),
    "seed": ("coeffs", "seed"),
    "still": ("coeffs", "still"),
    "blink": ("coeffs", "blink"),
    "pose_style": ("coeffs", "pose_style"),
    "expression_scale": ("coeffs", "expression_scale"),
    "head_motion_scale": ("coeffs", "head_motion_scale"),
    "fps": ("coeffs", "fps"),
    "batch_size": ("render", "batch_size"),
    "precision": ("render", "precision"),
    "jpeg_quality": (None, None),
}
_END = object()


class ProtocolError(SadTalkerError, ValueError):
    """The client broke the protocol; the message says how to fix the request."""


def _header(kind: str, **fields: Any) -> bytes:
    return json.dumps({"type": kind, **fields}).encode()


def pack(header: bytes, payload: bytes) -> bytes:
    """One binary message: 4-byte big-endian header length, JSON header, payload."""
    return len(header).to_bytes(4, "big") + header + payload


def unpack(message: bytes) -> tuple[dict, bytes]:
    """Inverse of :func:`pack` (clients and tests)."""
    n = int.from_bytes(message[:4], "big")
    return json.loads(message[4 : 4 + n]), message[4 + n :]


def parse_start(msg: Any) -> tuple[PipelineConfig, dict]:
    """Check a start message; returns the pipeline options and the stream settings.

    Raises:
        ProtocolError: anything malformed, with what was expected.
    """
    if not isinstance(msg, dict) or msg.get("type") != "start":
        raise ProtocolError(
            'The first message must be a JSON text {"type": "start", "image" or "face_id", '
            '"sample_rate", "format", "channels", "options"}.'
        )
    if ("image" in msg) == ("face_id" in msg):
        raise ProtocolError('The start message needs exactly one of "image" and "face_id".')
    fmt = msg.get("format", "f32le")
    if fmt not in FORMATS:
        raise ProtocolError(f'"format" must be one of {", ".join(FORMATS)}, got {fmt!r}.')
    rate, channels = msg.get("sample_rate"), msg.get("channels", 1)
    if not isinstance(rate, int) or not 8000 <= rate <= 192000:
        raise ProtocolError(f'"sample_rate" must be an integer in 8000..192000 Hz, got {rate!r}.')
    if not isinstance(channels, int) or not 1 <= channels <= 16:
        raise ProtocolError(f'"channels" must be an integer in 1..16, got {channels!r}.')
    options = msg.get("options") or {}
    if not isinstance(options, dict):
        raise ProtocolError('"options" must be a JSON object.')
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ProtocolError(f"Unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}.")
    parts: dict[str, dict] = {"extract": {}, "coeffs": {}, "render": {}}
    for key, value in options.items():
        part, name = OPTIONS[key]
        if part is not None:
            parts[part][name] = value
    quality = options.get("jpeg_quality", 85)
    if not isinstance(quality, int) or not 10 <= quality <= 100:
        raise ProtocolError(f'"jpeg_quality" must be an integer in 10..100, got {quality!r}.')
    try:
        cfg = PipelineConfig(
            extract=ExtractConfig(**parts["extract"]),
            coeffs=CoeffConfig(**parts["coeffs"]),
            render=RenderConfig(**parts["render"]),
        )
        check_stream_config(cfg.coeffs)
    except (TypeError, ValueError) as e:
        raise ProtocolError(f"Bad option: {e}") from None
    settings = {
        "image": msg.get("image"),
        "face_id": msg.get("face_id"),
        "rate": rate,
        "dtype": FORMATS[fmt],
        "channels": channels,
        "quality": quality,
    }
    return cfg, settings


def decode_pcm(data: bytes, dtype: np.dtype, channels: int) -> np.ndarray:
    """Raw interleaved PCM -> (n, channels) samples.

    Raises:
        ProtocolError: not a whole number of sample frames.
    """
    frame = dtype.itemsize * channels
    if len(data) % frame:
        raise ProtocolError(
            f"An audio message of {len(data)} bytes is not a whole number of {channels}-channel "
            f"{dtype.itemsize * 8}-bit sample frames ({frame} bytes each)."
        )
    return np.frombuffer(data, dtype).reshape(-1, channels)


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def mux_audio(video: Path, audio: np.ndarray, sample_rate: int, out: Path) -> None:
    """Copy the video-only MP4 ``video`` and add ``audio`` (mono float32) as AAC into ``out``."""
    import av

    writer_tmp = out.with_name(out.name + ".partial.mp4")
    try:
        with av.open(str(video)) as src, av.open(str(writer_tmp), "w", format="mp4") as dst:
            vin = src.streams.video[0]
            vout = dst.add_stream_from_template(vin)
            aout = dst.add_stream("aac", rate=sample_rate)
            aout.layout = "mono"
            for packet in src.demux(vin):
                if packet.dts is None:
                    continue
                packet.stream = vout
                dst.mux(packet)
            samples = np.clip(np.asarray(audio, np.float32), -1.0, 1.0)
            step = 1024
            for pos in range(0, samples.shape[0], step):
                frame = av.AudioFrame.from_ndarray(
                    samples[None, pos : pos + step], format="fltp", layout="mono"
                )
                frame.sample_rate = sample_rate
                frame.pts = pos
                frame.time_base = Fraction(1, sample_rate)
                for packet in aout.encode(frame):
                    dst.mux(packet)
            for packet in aout.encode(None):
                dst.mux(packet)
        writer_tmp.replace(out)
    finally:
        writer_tmp.unlink(missing_ok=True)


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


def stream_router(get_pipeline: Callable[[], Any], lock: Any = None, service=None):
    """A FastAPI ``APIRouter`` with the WebSocket endpoint at :data:`PATH`.

    Args:
        get_pipeline: returns the shared :class:`~sadtalker_core.pipeline.SadTalkerPipeline`.
        lock: held while a stream renders (A1111: the host's queue lock).
        service: a :class:`StreamService` to use (tests); built from the above by default.

    Raises:
        MissingDependencyError: FastAPI is not installed.
    """
    try:
        from fastapi import APIRouter, WebSocket, WebSocketDisconnect
    except ImportError as e:
        raise MissingDependencyError("fastapi", "The live endpoint /sadtalker/v1/stream") from e
    from starlette.concurrency import run_in_threadpool

    service = service or StreamService(get_pipeline, lock)
    router = APIRouter()

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        audio_q: queue.Queue = queue.Queue(maxsize=AUDIO_QUEUE)
        out_q: asyncio.Queue = asyncio.Queue(maxsize=FRAME_QUEUE)
        worker: asyncio.Future | None = None
        try:
            cfg, settings = parse_start(await _receive_json(ws))
            face_id, face = await run_in_threadpool(
                service.face, settings["image"], settings["face_id"], cfg
            )
            await ws.send_json(
                {
                    "type": "ready",
                    "face_id": face_id,
                    "fps": cfg.coeffs.fps,
                    "lookahead_ms": list(lookahead_ms(cfg.coeffs.still, cfg.coeffs.fps)),
                }
            )

            def put(item) -> None:  # worker thread -> event loop, blocks while the queue is full
                asyncio.run_coroutine_threadsafe(out_q.put(item), loop).result()

            def work() -> None:
                try:
                    _render(service, face, cfg, settings, audio_q, cancel, put)
                except CancelledError:
                    pass
                except (SadTalkerError, ValueError) as e:
                    put({"type": "error", "message": str(e), "code": 1008})
                except Exception as e:  # noqa: BLE001 - reported to the client, logged here
                    log.exception("stream failed")
                    put({"type": "error", "message": f"Server error: {e}", "code": 1011})
                finally:
                    with contextlib.suppress(RuntimeError):
                        put(None)

            worker = loop.run_in_executor(None, work)
            reader = asyncio.create_task(_read_audio(ws, service, settings, audio_q, cancel))
            await _send_results(ws, out_q, reader)
        except ProtocolError as e:
            await _fail(ws, str(e), 1008)
        except SadTalkerError as e:
            await _fail(ws, str(e), 1008)
        except WebSocketDisconnect:
            pass
        finally:
            cancel.set()
            with contextlib.suppress(queue.Full):
                audio_q.put_nowait(_END)
            while worker is not None and not worker.done():  # let the worker see the cancel
                with contextlib.suppress(asyncio.QueueEmpty):
                    out_q.get_nowait()
                await asyncio.sleep(0.05)

    # the class itself, not the string ``from __future__ import annotations`` leaves (FastAPI
    # looks names up in the module, where WebSocket is not imported)
    endpoint.__annotations__ = {"ws": WebSocket, "return": None}
    router.add_api_websocket_route(PATH, endpoint)
    router.service = service  # type: ignore[attr-defined]
    return router


async def _receive_json(ws) -> Any:
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        from fastapi import WebSocketDisconnect

        raise WebSocketDisconnect(msg.get("code", 1000))
    text = msg.get("text")
    if text is None:
        raise ProtocolError("Expected a JSON text message, got binary data.")
    if len(text) > MAX_MESSAGE:
        raise ProtocolError(f"The message is larger than {MAX_MESSAGE >> 20} MB.")
    try:
        return json.loads(text)
    except ValueError:
        raise ProtocolError(f"Not JSON: {text[:60]!r}.") from None


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
                    await _fail(ws, item["message"], item["code"])
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


async def _fail(ws, message: str, code: int) -> None:
    log.info("stream: %s", message)
    with contextlib.suppress(Exception):  # the client may be gone already
        await ws.send_json({"type": "error", "message": message})
        await ws.close(code=code)


def build_app(get_pipeline: Callable[[], Any], web_root: Path | None = None):
    """The standalone FastAPI app of ``sadtalker serve``: the endpoint and the page at ``/``."""
    try:
        from fastapi import FastAPI
        from fastapi.responses import FileResponse, RedirectResponse
    except ImportError as e:
        raise MissingDependencyError("fastapi", "The live endpoint /sadtalker/v1/stream") from e

    app = FastAPI(title="SadTalker live")
    router = stream_router(get_pipeline)
    app.include_router(router)
    app.state.stream_service = router.service
    page = (web_root or Path(__file__).resolve().parents[1] / "web" / "stream") / "index.html"

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/stream")

    @app.get("/stream", include_in_schema=False)
    def stream_page():
        if not page.is_file():
            raise SadTalkerError(f"The page {page} is missing: reinstall the pack.")
        return FileResponse(page, media_type="text/html")

    return app


__all__ = [
    "FORMATS",
    "OPTIONS",
    "PATH",
    "ProtocolError",
    "StreamService",
    "build_app",
    "pack",
    "parse_start",
    "stream_router",
    "unpack",
]
