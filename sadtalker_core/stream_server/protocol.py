"""The protocol of the live endpoint ``/sadtalker/v1/stream``: the messages, their checks and
their encoding (one stream per connection).

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
      a close (code 1008 for bad input, 1011 for a server failure) on an error. A stream whose
      audio passes the server's duration limit gets 1008 with ``"setting"`` (the setting that
      raises it) in the error and a close reason naming both; one stopped on the server (A1111's
      Interrupt) gets its error and 1000.

Why JPEG frames and not fragmented MP4: every frame stands alone, so a browser shows it the
moment it arrives (an ``<img>``/canvas, no Media Source Extensions, no H.264 decoder needed:
Chromium builds without proprietary codecs cannot play H.264 through MSE), nothing is lost when
a client joins late or drops a frame, and the encoder adds no delay (an H.264 encoder holds
frames for its lookahead and B-frames, a fragment holds a group of pictures). At 256 px a
frame is 10-20 KB; the complete MP4 comes once at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CoeffConfig, ExtractConfig, PipelineConfig, RenderConfig
from ..errors import SadTalkerError
from ..stream import check_stream_config

log = logging.getLogger(__name__)

PATH = "/sadtalker/v1/stream"
MAX_MESSAGE = 8 << 20  # bytes: larger messages (start photo, audio) are refused
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


class ProtocolError(SadTalkerError, ValueError):
    """The client broke the protocol; the message says how to fix the request."""


class StreamLimitError(ProtocolError):
    """A stream went past a limit of the server (its audio lasts too long); ``setting`` names
    the setting that raises the limit, ``reason`` is the short close reason."""

    def __init__(self, message: str, setting: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.setting = setting
        self.reason = reason


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


async def receive_json(
    ws, max_bytes: int = MAX_MESSAGE, too_large: Callable[[int], Exception] | None = None
) -> Any:
    """The next message as JSON: a text message of at most ``max_bytes`` bytes (the start
    message); a longer one raises ``too_large(its decoded size, estimated)``, or a
    :class:`ProtocolError`."""
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        from fastapi import WebSocketDisconnect

        raise WebSocketDisconnect(msg.get("code", 1000))
    text = msg.get("text")
    if text is None:
        raise ProtocolError("Expected a JSON text message, got binary data.")
    if len(text) > max_bytes:
        if too_large is not None:
            raise too_large(len(text) * 3 // 4)
        raise ProtocolError(f"The message is larger than {max_bytes / (1 << 20):g} MB.")
    try:
        return json.loads(text)
    except ValueError:
        raise ProtocolError(f"Not JSON: {text[:60]!r}.") from None


async def fail(
    ws, message: str, code: int, setting: str | None = None, reason: str | None = None
) -> None:
    """The error message (with the ``setting`` that decides, if any), then a close with ``code``
    (1008 bad input or a limit, 1011 a server failure, 1000 an interrupt on the server) and
    ``reason`` (at most 123 bytes, cut)."""
    log.info("stream: %s", message)
    body = {"type": "error", "message": message}
    if setting:
        body["setting"] = setting
    with contextlib.suppress(Exception):  # the client may be gone already
        await ws.send_json(body)
        cut = (reason or "").encode()[:123].decode(errors="ignore")
        await ws.close(code=code, reason=cut or None)
