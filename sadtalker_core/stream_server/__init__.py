"""The live WebSocket endpoint ``/sadtalker/v1/stream``: one FastAPI router, mounted by the
A1111/Forge API (``sadtalker_webui/api.py``) and by ``sadtalker serve`` (``cli/serve.py``).

- :mod:`.protocol`: the messages (start, PCM audio, end/cancel; ready, JPEG frames, the final
  MP4, done/error), their checks and encoding, and why JPEG frames;
- :mod:`.session`: one stream: the face cache, the worker thread, the bounded queues that keep
  a slow client from growing memory (backpressure);
- :mod:`.app`: the router (:func:`stream_router`) and ``sadtalker serve``'s app with its page
  (:func:`build_app`).

The names below are re-exported here.
"""

from __future__ import annotations

from .app import build_app, stream_router
from .protocol import (
    FORMATS,
    MAX_MESSAGE,
    OPTIONS,
    PATH,
    ProtocolError,
    StreamLimitError,
    decode_pcm,
    encode_jpeg,
    mux_audio,
    pack,
    parse_start,
    unpack,
)
from .session import AUDIO_QUEUE, FRAME_QUEUE, MAX_FACES, JobHooks, StreamService

__all__ = [
    "AUDIO_QUEUE",
    "FORMATS",
    "FRAME_QUEUE",
    "JobHooks",
    "MAX_FACES",
    "MAX_MESSAGE",
    "OPTIONS",
    "PATH",
    "ProtocolError",
    "StreamLimitError",
    "StreamService",
    "build_app",
    "decode_pcm",
    "encode_jpeg",
    "mux_audio",
    "pack",
    "parse_start",
    "stream_router",
    "unpack",
]
