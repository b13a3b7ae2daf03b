"""The live endpoint as a FastAPI router (:func:`stream_router`, mounted by the A1111/Forge API
in ``sadtalker_webui/api.py``) and the standalone app of ``sadtalker serve`` with its page
(:func:`build_app`)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError, SadTalkerError
from ..stream import lookahead_ms
from .protocol import PATH, StreamLimitError, fail, parse_start, receive_json
from .session import (
    _END,
    AUDIO_QUEUE,
    FRAME_QUEUE,
    StreamService,
    _read_audio,
    _send_results,
    _work,
)


def stream_router(get_pipeline: Callable[[], Any], lock: Any = None, service=None, **limits: Any):
    """A FastAPI ``APIRouter`` with the WebSocket endpoint at :data:`PATH`.

    Args:
        get_pipeline: returns the shared :class:`~sadtalker_core.pipeline.SadTalkerPipeline`.
        lock: held while a stream renders (without ``job``).
        service: a :class:`StreamService` to use (tests); built from the above by default.
        limits: ``job``, ``max_seconds``, ``limit_setting``, ``limit_hint``, ``max_photo_mb``,
            ``photo_setting`` of :class:`StreamService` (A1111: the host's job and the API's
            duration and request-size settings; ``sadtalker serve``: its flags).

    Raises:
        MissingDependencyError: FastAPI is not installed.
    """
    try:
        from fastapi import APIRouter, WebSocket, WebSocketDisconnect
    except ImportError as e:
        raise MissingDependencyError("fastapi", "The live endpoint /sadtalker/v1/stream") from e

    service = service or StreamService(get_pipeline, lock, **limits)
    router = APIRouter()

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        audio_q: queue.Queue = queue.Queue(maxsize=AUDIO_QUEUE)
        out_q: asyncio.Queue = asyncio.Queue(maxsize=FRAME_QUEUE)
        worker: asyncio.Future | None = None
        try:
            cfg, settings, face = await _start(ws, service)

            def put(item) -> None:  # worker thread -> event loop, blocks while the queue is full
                asyncio.run_coroutine_threadsafe(out_q.put(item), loop).result()

            worker = loop.run_in_executor(
                None, _work, service, face, cfg, settings, audio_q, cancel, put
            )
            reader = asyncio.create_task(_read_audio(ws, service, settings, audio_q, cancel))
            await _send_results(ws, out_q, reader)
        except StreamLimitError as e:
            await fail(ws, str(e), 1008, e.setting, e.reason)
        except SadTalkerError as e:  # a ProtocolError or the core's (no face, bad options)
            await fail(ws, str(e), 1008)
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


async def _start(ws, service: StreamService) -> tuple[Any, dict, Any]:
    """The start message: its options checked, the photo within the limits and its face found
    (or the cached face of ``face_id``), answered with ``ready``; returns (config, settings,
    face)."""
    from starlette.concurrency import run_in_threadpool

    photo_limit = service.photo_limit()
    start = await receive_json(ws, service.start_bytes(photo_limit), service.photo_too_large)
    cfg, settings = parse_start(start)
    settings["max_seconds"] = service.audio_limit()
    face_id, face = await run_in_threadpool(
        service.face, settings["image"], settings["face_id"], cfg, photo_limit
    )
    fps, still = cfg.coeffs.fps, cfg.coeffs.still
    ready = {"type": "ready", "face_id": face_id, "fps": fps}
    await ws.send_json({**ready, "lookahead_ms": list(lookahead_ms(still, fps))})
    return cfg, settings, face


def build_app(get_pipeline: Callable[[], Any], web_root: Path | None = None, **limits: Any):
    """The standalone FastAPI app of ``sadtalker serve``: the endpoint (with ``limits``, as in
    :func:`stream_router`) and the page at ``/``."""
    try:
        from fastapi import FastAPI
        from fastapi.responses import FileResponse, RedirectResponse
    except ImportError as e:
        raise MissingDependencyError("fastapi", "The live endpoint /sadtalker/v1/stream") from e

    app = FastAPI(title="SadTalker live")
    router = stream_router(get_pipeline, **limits)
    app.include_router(router)
    app.state.stream_service = router.service
    page = (web_root or Path(__file__).resolve().parents[2] / "web" / "stream") / "index.html"

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/stream")

    @app.get("/stream", include_in_schema=False)
    def stream_page():
        if not page.is_file():
            raise SadTalkerError(f"The page {page} is missing: reinstall the pack.")
        return FileResponse(page, media_type="text/html")

    return app
