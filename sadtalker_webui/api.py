"""HTTP API next to the host's ``/sdapi/v1``: ``POST /sadtalker/v1/generate`` and
``GET /sadtalker/v1/weights``. Jobs take the same queue lock as the tab and the host's own jobs;
``/sdapi/v1/interrupt`` stops them.

What a request may read follows A1111's own API (files come in the request, never from the
server unless a setting says so; the rules are in :mod:`.api_inputs`):

- ``source_image``, ``driven_audio``, ``ref_pose``, ``ref_eyeblink``: base64 or a data URL,
  always. A path on the server only with the setting ``sadtalker_api_allow_paths`` on, and only
  inside a folder of ``sadtalker_api_path_folders`` once ``..`` and symlinks are resolved;
  anything else is a 403 that says the same for files that exist and files that do not.
- The decoded files of a request weigh at most ``sadtalker_api_max_request_mb`` MB, the audio,
  reference videos and idle motion last at most ``sadtalker_api_max_seconds``: 413 beyond.
- The live endpoint ``/sadtalker/v1/stream`` (``sadtalker_core.stream_server``): each stream is a
  host job like a request (``/sdapi/v1/interrupt`` stops it), its start photo weighs at most
  ``sadtalker_api_max_request_mb`` MB decoded and its audio lasts at most
  ``sadtalker_api_max_seconds``: past either the stream ends with an error naming the limit and
  the setting (close code 1008).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sadtalker_core import (
    CancelledError,
    InvalidAudioError,
    InvalidImageError,
    ModelNotFoundError,
    NoFaceDetectedError,
    SadTalkerError,
    check_weights,
)

from . import host
from .api_inputs import (
    FILE_FIELDS,
    BadInputError,
    ForbiddenInputError,
    RequestBudget,
    TooLargeError,
    body_limit,
    body_too_large,
    check_durations,
    materialize,
)
from .options import OptionError, pipeline_config
from .studio import STUDIO, Studio

log = logging.getLogger(__name__)


def status_of(e: BaseException) -> int:
    """HTTP status of an error: 4xx for what the caller can fix, 5xx for faults of the server."""
    if isinstance(e, (OptionError, BadInputError)):
        return 400
    if isinstance(e, ForbiddenInputError):
        return 403
    if isinstance(e, TooLargeError):
        return 413
    if isinstance(e, (NoFaceDetectedError, InvalidAudioError, InvalidImageError)):
        return 422
    if isinstance(e, CancelledError):
        return 409
    if isinstance(e, ModelNotFoundError):
        return 503
    return 500


def error_json(e: BaseException) -> dict:
    """The body of an error answer: ``error`` (the message), ``type``, and ``setting`` when a
    setting decides (403, 413)."""
    body = {"error": str(e), "type": type(e).__name__}
    if getattr(e, "setting", None):
        body["setting"] = e.setting
    return body


# --- routes ---------------------------------------------------------------------------------


def generate(payload: dict, studio: Studio = STUDIO) -> dict:
    """Run one request: inputs checked and decoded first, then the render under the queue lock.
    Raises SadTalkerError / OptionError."""
    if not isinstance(payload, dict):
        raise BadInputError("The body must be a JSON object.")
    if not payload.get("source_image"):
        raise BadInputError("'source_image' is required (base64 or a data URL).")
    options = {k: v for k, v in payload.items() if k not in FILE_FIELDS}
    config, _ = pipeline_config(options)  # a bad option fails before any file is read
    budget = RequestBudget()
    with tempfile.TemporaryDirectory(prefix="sadtalker_api_") as tmp:
        folder = Path(tmp)
        files = {f: materialize(f, payload.get(f), folder, budget) for f in FILE_FIELDS}
        check_durations(files, config.coeffs.idle_seconds)
        image: Any = files["source_image"]
        if Path(image).parent == folder:
            image = _picture(image)
        with host.job("sadtalker-api") as st:
            st.job_count = 1

            def progress(stage: str, done: int, total: int) -> None:
                if stage == "render":
                    st.sampling_step, st.sampling_steps = done, total
                st.textinfo = f"SadTalker: {stage} {done}/{total}"

            result = studio.generate(
                image,
                files["driven_audio"],
                options,
                ref_eyeblink=files["ref_eyeblink"],
                ref_pose=files["ref_pose"],
                progress=progress,
                should_cancel=host.is_interrupted,
            )
    return {
        "video": base64.b64encode(result.path.read_bytes()).decode("ascii"),
        **result.to_json(),
    }


def _picture(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise InvalidImageError(f"'source_image' is not a readable picture: {e}") from e


def weights(studio: Studio = STUDIO) -> dict:
    """What ``python -m sadtalker_core check-weights`` reports, as JSON."""
    dirs = studio.checkpoint_dirs()
    files = []
    with host.torch_own_loader():
        reports = check_weights(dirs)
    for r in reports:
        files.append(
            {
                "name": r.spec.name,
                "status": r.status,
                "path": str(r.path) if r.path else None,
                "reason": r.reason or None,
                "needed_for": r.spec.needed_for,
            }
        )
    return {
        "weights_dir": str(host.weights_dir()),
        "searched": [str(d) for d in dirs],
        "files": files,
    }


async def read_body(request) -> Any:
    """The JSON body, read no further than :func:`body_limit` (413 beyond, 400 if not JSON).

    A body past the limit is still read, and dropped, up to 4 times the limit, so that common
    clients (urllib, requests), which send the whole body before reading the answer, get the
    413 instead of a broken pipe; past that the connection is closed.
    """
    limit = body_limit()
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else 0
    too_large = limit is not None and size > limit
    chunks, read = [], 0
    async for chunk in request.stream():
        read += len(chunk)
        too_large = too_large or (limit is not None and read > limit)
        if not too_large:
            chunks.append(chunk)
        elif read > 4 * limit:
            break
    if too_large:
        raise body_too_large(max(size, read))
    try:
        return json.loads(b"".join(chunks))
    except ValueError as e:
        raise BadInputError(f"The body is not JSON ({e}).") from None


def register(app, studio: Studio = STUDIO) -> None:
    """Add the routes to the host's FastAPI app (``on_app_started(demo, app)``)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    async def generate_route(request):
        try:
            payload = await read_body(request)
            return await run_in_threadpool(generate, payload, studio)
        except (SadTalkerError, OptionError) as e:
            code = status_of(e)
            (log.error if code >= 500 else log.info)("SadTalker API: %s", e)
            return JSONResponse(error_json(e), status_code=code)

    # the class itself, not the string that ``from __future__ import annotations`` would leave
    # (FastAPI looks names up in the module, where Request is not imported)
    generate_route.__annotations__ = {"request": Request}
    app.post("/sadtalker/v1/generate", tags=["SadTalker"])(generate_route)

    @app.get("/sadtalker/v1/weights", tags=["SadTalker"])
    def weights_route():
        return weights(studio)

    # live: the WebSocket endpoint /sadtalker/v1/stream, each stream a host job (queue lock,
    # progress bar, Interrupt) whose audio and start photo obey the API's duration and size
    # settings
    from sadtalker_core.stream_server import stream_router

    app.include_router(
        stream_router(
            studio.pipeline,
            job=live_job,
            max_seconds=lambda: host.api_limit(host.API_MAX_SECONDS, host.API_DEFAULT_MAX_SECONDS),
            limit_setting=host.API_MAX_SECONDS,
            limit_hint="Settings > SadTalker",
            max_photo_mb=lambda: host.api_limit(
                host.API_MAX_REQUEST_MB, host.API_DEFAULT_MAX_REQUEST_MB
            ),
            photo_setting=host.API_MAX_REQUEST_MB,
        )
    )


@contextlib.contextmanager
def live_job() -> Iterator[Any]:
    """One live stream as a host job (``host.job``): it waits for the queue lock, shows its
    frames in the progress text, and ``/sdapi/v1/interrupt`` (the Interrupt button) stops it at
    its next batch, or while it waits for audio."""
    from sadtalker_core.stream_server import JobHooks

    with host.job("sadtalker-live") as st:
        st.job_count = 1
        st.textinfo = "SadTalker live: waiting for speech"

        def progress(frames: int) -> None:
            st.sampling_step = frames
            st.textinfo = f"SadTalker live: {frames} frames"

        yield JobHooks(should_cancel=host.is_interrupted, progress=progress)
