"""The live endpoint as a FastAPI router (:func:`stream_router`, mounted by the A1111/Forge API
in ``sadtalker_webui/api.py``) and the standalone app of ``sadtalker serve`` with its page
(:func:`build_app`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CancelledError, MissingDependencyError, SadTalkerError
from ..stream import lookahead_ms
from .protocol import PATH, ProtocolError, fail, parse_start, receive_json
from .session import (
    _END,
    AUDIO_QUEUE,
    FRAME_QUEUE,
    StreamService,
    _read_audio,
    _render,
    _send_results,
)

log = logging.getLogger(__name__)


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
            cfg, settings = parse_start(await receive_json(ws))
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
            await fail(ws, str(e), 1008)
        except SadTalkerError as e:
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
