"""What a request of the SadTalker HTTP API may read, and how much (``sadtalker_webui.api``).

- A file field is base64 or a data URL, always: :func:`materialize` writes it to a temporary
  folder, counting its decoded bytes against ``sadtalker_api_max_request_mb``
  (:class:`RequestBudget`).
- A path on the server only with ``sadtalker_api_allow_paths`` on and inside a folder of
  ``sadtalker_api_path_folders`` once ``..`` and symlinks are resolved (:func:`server_path`);
  URLs never.
- Audio, reference videos and idle motion last at most ``sadtalker_api_max_seconds``
  (:func:`check_durations`).

Errors: :class:`BadInputError` (400), :class:`ForbiddenInputError` (403), :class:`TooLargeError`
(413); the last two name the setting that decides.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from pathlib import Path
from typing import Any

from sadtalker_core import SadTalkerError

from . import host

log = logging.getLogger(__name__)

FILE_FIELDS = ("source_image", "driven_audio", "ref_pose", "ref_eyeblink")
REFERENCE_FPS = 25.0  # reference videos drive the coefficients frame by frame at 25 fps
MB = 1 << 20
_LONGEST_PATH = 4096  # longer strings are base64, never paths (PATH_MAX on Linux)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

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


class ForbiddenInputError(SadTalkerError):
    """A request names a file on the server that the settings do not open to the API (403);
    ``setting`` is the one to change."""

    def __init__(self, message: str, setting: str):
        super().__init__(message)
        self.setting = setting


class TooLargeError(SadTalkerError):
    """A request beyond a size or duration limit (413); ``setting`` raises the limit."""

    def __init__(self, message: str, setting: str):
        super().__init__(message)
        self.setting = setting


class RequestBudget:
    """Decoded bytes a request may still carry (setting ``sadtalker_api_max_request_mb``)."""

    def __init__(self) -> None:
        self.mb = host.api_limit(host.API_MAX_REQUEST_MB, host.API_DEFAULT_MAX_REQUEST_MB)
        self.limit = None if self.mb is None else int(self.mb * MB)
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.limit is not None and self.used > self.limit:
            raise TooLargeError(
                f"The files of this request decode to {self.used / MB:.1f} MB; the limit is "
                f"{self.mb:g} MB. Send smaller files, or raise the limit in Settings > "
                f"SadTalker ('{host.API_MAX_REQUEST_MB}').",
                host.API_MAX_REQUEST_MB,
            )


def materialize(
    field: str, value: Any, folder: Path, budget: RequestBudget | None = None
) -> str | None:
    """A request input as a file path: base64 (or a data URL) written to ``folder``, or a path
    on the server that the settings open to the API (see :func:`server_path`).

    Raises:
        BadInputError: not a string, a URL, empty, or a missing file in an allowed folder.
        ForbiddenInputError: a server path the settings do not allow.
        TooLargeError: the decoded files pass the request size limit.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadInputError(f"'{field}' must be a string: base64 or a data URL.")
    suffix, data = None, value
    if value.startswith("data:"):
        head, _, data = value.partition(",")
        suffix = _MIME.get(head[5:].split(";")[0].lower())
    elif _URL.match(value):
        raise BadInputError(
            f"'{field}': URLs are not fetched by the SadTalker API; send the file as base64 or "
            "a data URL."
        )
    compact = "".join(data.split())
    raw = None
    if not value.startswith("data:") and len(value) < _LONGEST_PATH:
        raw = _b64(compact)  # short: decoded to tell a path from base64
        if _is_path(value, raw):
            return server_path(field, value)
    if budget is not None:
        budget.take(len(compact) * 3 // 4)  # the bytes base64 stands for, before decoding
    raw = raw if raw is not None else _b64(compact)
    if raw is None:
        raise BadInputError(
            f"'{field}' is not valid base64 ({value[:60]!r}...). Send the file as base64 or a "
            "data URL (data:image/png;base64,...)."
        )
    if not raw:
        raise BadInputError(f"'{field}' is empty.")
    if suffix is None:
        suffix = next((s for magic, s in _MAGIC if raw.startswith(magic)), None)
        if suffix is None:
            suffix = ".mp4" if raw[4:8] == b"ftyp" else ".bin"
    path = folder / f"{field}{suffix}"
    path.write_bytes(raw)
    return str(path)


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _is_path(value: str, raw: bytes | None) -> bool:
    """Whether a (non data-URL) string is meant as a path: short, and not base64 of a known
    format; valid base64 without a path separator stays base64 (its decoder says what is
    wrong). Decided from the text alone, never from the file system."""
    if "\0" in value:
        return False
    if raw is None:
        return True
    if any(raw.startswith(magic) for magic, _ in _MAGIC) or raw[4:8] == b"ftyp":
        return False
    return "/" in value or "\\" in value


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.normcase(path), os.path.normcase(folder)
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # another drive (Windows)
        return False


def server_path(field: str, value: str) -> str:
    """The real path of a file the API may read, or ForbiddenInputError.

    ``value`` is made absolute (from the webui's working folder) and its ``..`` collapsed; it
    must then lie inside a folder of the setting, before the file system is asked anything, so
    the answer is the same for files that exist and files that do not. Its symlinks are then
    resolved, and the real path must lie inside a listed folder too (a link inside pointing out
    is refused). The real path is what is read afterwards.
    """
    folders = host.api_path_folders()
    if not folders:
        raise ForbiddenInputError(
            f"'{field}': this API reads no files on the server by default. Send the file as "
            "base64 or a data URL, or allow server paths in Settings > SadTalker "
            f"('{host.API_ALLOW_PATHS}') and list the file's folder in "
            f"'{host.API_PATH_FOLDERS}'.",
            host.API_ALLOW_PATHS,
        )
    given = os.path.abspath(os.path.expanduser(value))
    written = [os.path.abspath(os.path.expanduser(f)) for f in folders]
    real_folders = [os.path.realpath(f) for f in written]
    refused = ForbiddenInputError(
        f"'{field}': {value!r} is not inside a folder the API may read. Send the file as base64 "
        f"or a data URL, or add its folder to '{host.API_PATH_FOLDERS}' in Settings > SadTalker.",
        host.API_PATH_FOLDERS,
    )
    if not any(_inside(given, f) for f in written + real_folders):
        raise refused
    real = os.path.realpath(given)
    if not any(_inside(real, f) for f in real_folders):
        raise refused
    if not os.path.isfile(real):
        raise BadInputError(f"'{field}': there is no file {value!r} (a folder the API may read).")
    return real


def check_durations(files: dict[str, str | None], idle_seconds: float | None) -> None:
    """413 when the audio, a reference video or the idle motion lasts longer than the setting
    ``sadtalker_api_max_seconds``. Files that do not decode are left to the core's messages."""
    limit = host.api_limit(host.API_MAX_SECONDS, host.API_DEFAULT_MAX_SECONDS)
    if limit is None:
        return
    spans = {"idle_seconds": idle_seconds or 0.0}
    if files.get("driven_audio"):
        spans["driven_audio"] = _audio_seconds(files["driven_audio"], limit)
    for field in ("ref_pose", "ref_eyeblink"):
        if files.get(field):
            spans[field] = _video_seconds(files[field], limit)
    for field, seconds in spans.items():
        if seconds > limit:
            raise TooLargeError(
                f"'{field}' lasts longer than the limit of {limit:g} s. Send a shorter clip, or "
                f"raise the limit in Settings > SadTalker ('{host.API_MAX_SECONDS}').",
                host.API_MAX_SECONDS,
            )


def _audio_seconds(path: str, stop_after: float) -> float:
    """Seconds of decoded audio (as the core counts them: undecodable packets skipped),
    counted until ``stop_after`` is passed; 0 for a file PyAV cannot open."""
    import av

    seconds = 0.0
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                return 0.0
            stream = container.streams.best("audio") or container.streams.audio[0]
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    continue
                for frame in frames:
                    seconds += frame.samples / float(frame.sample_rate or stream.rate or 1)
                if seconds > stop_after:
                    break
    except av.FFmpegError as e:
        log.info("SadTalker API: %s does not decode (%s); the core will say why", path, e)
    return seconds


def _video_seconds(path: str, stop_after: float) -> float:
    """Seconds a reference video drives (its frames at 25 fps), counted until ``stop_after``."""
    import av

    frames = 0
    try:
        with av.open(path) as container:
            if not container.streams.video:
                return 0.0
            for packet in container.demux(container.streams.video[0]):
                frames += packet.size > 0
                if frames / REFERENCE_FPS > stop_after:
                    break
    except av.FFmpegError as e:
        log.info("SadTalker API: %s does not decode (%s); the core will say why", path, e)
    return frames / REFERENCE_FPS


def body_limit() -> int | None:
    """Bytes of JSON body read at most: the decoded limit as base64 (4/3), line breaks and the
    options. The decoded size is checked exactly afterwards."""
    mb = host.api_limit(host.API_MAX_REQUEST_MB, host.API_DEFAULT_MAX_REQUEST_MB)
    return None if mb is None else int(mb * MB * 3 / 2) + MB


def body_too_large(size: int) -> TooLargeError:
    limit = host.api_limit(host.API_MAX_REQUEST_MB, host.API_DEFAULT_MAX_REQUEST_MB)
    return TooLargeError(
        f"The request body has {size / MB:.1f} MB or more; its files may decode to {limit:g} MB "
        f"at most. Send smaller files, or raise the limit in Settings > SadTalker "
        f"('{host.API_MAX_REQUEST_MB}').",
        host.API_MAX_REQUEST_MB,
    )
