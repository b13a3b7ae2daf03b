"""HTTP API next to the host's ``/sdapi/v1``: ``POST /sadtalker/v1/generate`` and
``GET /sadtalker/v1/weights``. Jobs take the same queue lock as the tab and the host's own jobs;
``/sdapi/v1/interrupt`` stops them."""

from __future__ import annotations

import base64
import binascii
import logging
import tempfile
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
from .options import OptionError
from .studio import STUDIO, Studio

log = logging.getLogger(__name__)

# Leading bytes -> file suffix, for base64 inputs without a data-URL type.
_MAGIC = (
    (b"\x89PNG", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"RIFF", ".wav"),
    (b"ID3", ".mp3"),
    (b"\xff\xfb", ".mp3"),
    (b"fLaC", ".flac"),
    (b"OggS", ".ogg"),
    (b"\x1aE\xdf\xa3", ".webm"),
)
_MIME = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/mpeg": ".mp3",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/mp4": ".m4a",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
}


class BadInputError(SadTalkerError):
    """A request field is missing or undecodable (HTTP 400)."""


def status_of(e: BaseException) -> int:
    """HTTP status of an error: 4xx for what the caller can fix, 5xx for faults of the server."""
    if isinstance(e, (OptionError, BadInputError)):
        return 400
    if isinstance(e, (NoFaceDetectedError, InvalidAudioError, InvalidImageError)):
        return 422
    if isinstance(e, CancelledError):
        return 409
    if isinstance(e, ModelNotFoundError):
        return 503
    return 500


def materialize(field: str, value: Any, folder: Path) -> str | None:
    """A request input as a path: a file on the server as it is, base64 (or a data URL) written
    to ``folder``. Raises BadInputError when it is neither."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadInputError(f"'{field}' must be a base64 string or a path on the server.")
    if len(value) < 4096 and not value.startswith("data:") and Path(value).expanduser().is_file():
        return str(Path(value).expanduser())
    suffix = None
    data = value
    if value.startswith("data:"):
        head, _, data = value.partition(",")
        suffix = _MIME.get(head[5:].split(";")[0].lower())
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadInputError(
            f"'{field}' is neither a file on the server nor valid base64 ({value[:60]!r}...)."
        ) from None
    if not raw:
        raise BadInputError(f"'{field}' is empty.")
    if suffix is None:
        suffix = next((s for magic, s in _MAGIC if raw.startswith(magic)), None)
        if suffix is None:
            suffix = ".mp4" if raw[4:8] == b"ftyp" else ".bin"
    path = folder / f"{field}{suffix}"
    path.write_bytes(raw)
    return str(path)


def generate(payload: dict, studio: Studio = STUDIO) -> dict:
    """Run one request (under the queue lock). Raises SadTalkerError / OptionError."""
    if not isinstance(payload, dict):
        raise BadInputError("The body must be a JSON object.")
    if not payload.get("source_image"):
        raise BadInputError("'source_image' is required (base64 or a path on the server).")
    options = {
        k: v
        for k, v in payload.items()
        if k not in ("source_image", "driven_audio", "ref_eyeblink", "ref_pose")
    }
    with tempfile.TemporaryDirectory(prefix="sadtalker_api_") as tmp:
        folder = Path(tmp)
        image = materialize("source_image", payload.get("source_image"), folder)
        audio = materialize("driven_audio", payload.get("driven_audio"), folder)
        blink = materialize("ref_eyeblink", payload.get("ref_eyeblink"), folder)
        pose = materialize("ref_pose", payload.get("ref_pose"), folder)
        if image is not None and Path(image).parent == folder:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(image) as im:
                    picture = im.convert("RGB")
            except (UnidentifiedImageError, OSError) as e:
                raise InvalidImageError(f"'source_image' is not a readable picture: {e}") from e
            image = picture
        with host.job("sadtalker-api") as st:
            st.job_count = 1

            def progress(stage: str, done: int, total: int) -> None:
                if stage == "render":
                    st.sampling_step, st.sampling_steps = done, total
                st.textinfo = f"SadTalker: {stage} {done}/{total}"

            result = studio.generate(
                image,
                audio,
                options,
                ref_eyeblink=blink,
                ref_pose=pose,
                progress=progress,
                should_cancel=host.is_interrupted,
            )
    return {
        "video": base64.b64encode(result.path.read_bytes()).decode("ascii"),
        **result.to_json(),
    }


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
                "needed_for": getattr(r.spec, "needed_for", None),
            }
        )
    return {
        "weights_dir": str(host.weights_dir()),
        "searched": [str(d) for d in dirs],
        "files": files,
    }


def register(app, studio: Studio = STUDIO) -> None:
    """Add the routes to the host's FastAPI app (``on_app_started(demo, app)``)."""
    from fastapi import Body
    from fastapi.responses import JSONResponse

    @app.post("/sadtalker/v1/generate", tags=["SadTalker"])
    def generate_route(payload: dict = Body(...)):  # noqa: B008 (FastAPI's way)
        try:
            return generate(payload, studio)
        except (SadTalkerError, OptionError) as e:
            code = status_of(e)
            (log.error if code >= 500 else log.info)("SadTalker API: %s", e)
            return JSONResponse({"error": str(e), "type": type(e).__name__}, status_code=code)

    @app.get("/sadtalker/v1/weights", tags=["SadTalker"])
    def weights_route():
        return weights(studio)
