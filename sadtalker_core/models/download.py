"""Fetching the official checkpoint files, only when the user asks for it."""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DownloadError
from .check import validate_file
from .locate import ENV_CHECKPOINTS, find_file
from .registry import FILES

log = logging.getLogger(__name__)

_SHARED = (
    "mapping_00229-model.pth.tar",
    "mapping_00109-model.pth.tar",
    "detection_Resnet50_Final.pth",  # the official face detector and landmark net
    "alignment_WFLW_4HG.pth",
)
CORE_FILES = {
    256: ("SadTalker_V0.0.2_256.safetensors", *_SHARED),
    512: ("SadTalker_V0.0.2_512.safetensors", *_SHARED),
}
ENHANCER_FILES = ("GFPGANv1.4.pth", "parsing_parsenet.pth")  # face restoration + its paste mask
BACKGROUND_FILES = ("RealESRGAN_x2plus.pth",)


def files_for(
    sizes: Sequence[int] = (256,), enhancer: bool = False, background: bool = False
) -> list[str]:
    """The files to download for render ``sizes``, the face enhancer, the background upscaler."""
    names: list[str] = []
    for s in sizes:
        names += [n for n in CORE_FILES[s] if n not in names]
    if enhancer:
        names += list(ENHANCER_FILES)
    if background:
        names += list(BACKGROUND_FILES)
    return names


def _manual_instructions(names: Sequence[str], dest: Path, url_base: str | None = None) -> str:
    lines = [
        f"Download these files by hand and put them in {dest} "
        f"(or point {ENV_CHECKPOINTS} at their folder):"
    ]
    lines += [f"  {n}  (~{FILES[n].size_mb} MB)  {file_url(n, url_base)}" for n in names]
    lines.append("Then run: sadtalker check-weights " + str(dest))
    return "\n".join(lines)


def download_weights(
    dest: str | os.PathLike,
    names: Sequence[str],
    progress: Callable[[str, int, int], None] | None = None,
    timeout: float = 30.0,
    url_base: str | None = None,
) -> list[Path]:
    """Download the official files ``names`` into ``dest``; files already valid there are kept.

    Each file is written to ``<name>.part`` and renamed only once complete and valid, so an
    interrupted or failed download never leaves a file under the official name; the next call
    resumes a ``.part`` file where it stopped (HTTP range request) when the server allows it.

    Args:
        dest: target folder (created if needed).
        names: official file names (keys of ``registry.FILES``).
        progress: optional ``(name, bytes_done, bytes_total)`` callback; total is 0 if unknown.
        timeout: seconds to wait for the server before giving up.
        url_base: a mirror serving the files by name (``<url_base>/<name>``) instead of the
            official URLs.

    Raises:
        DownloadError: no network or a server error; says which files to fetch by hand and where.
    """
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    todo = []
    for name in names:
        have = find_file(name, [dest])
        if have is not None and not validate_file(have, FILES[name]):
            log.info("%s already present and valid", name)
            continue
        todo.append(name)
    done: list[Path] = []
    for i, name in enumerate(todo):
        url = file_url(name, url_base)
        try:
            done.append(_fetch(name, url, dest, progress, timeout))
        except DownloadError:
            raise
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            why = getattr(e, "reason", None) or e
            raise DownloadError(
                f"Could not download {name} from {url}: {why}.\n"
                + _manual_instructions(todo[i:], dest, url_base)
            ) from e
    return done


def file_url(name: str, url_base: str | None = None) -> str:
    """Where ``name`` is fetched from: its official URL, or ``url_base/name`` (a mirror)."""
    return f"{url_base.rstrip('/')}/{name}" if url_base else FILES[name].url


def _fetch(
    name: str,
    url: str,
    dest: Path,
    progress: Callable[[str, int, int], None] | None,
    timeout: float,
) -> Path:
    """Download one file to ``<name>.part`` (resuming a previous partial download when the
    server allows ranges), validate it and rename it into place."""
    target, part = dest / name, dest / (name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        resumed = have > 0 and resp.status == 206
        got = have if resumed else 0
        total = int(resp.headers.get("Content-Length") or 0)
        total = total + got if total else 0
        if have and not resumed:
            log.info("%s: the server does not resume; downloading it again", name)
        with open(part, "ab" if resumed else "wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                got += len(chunk)
                if progress is not None:
                    progress(name, got, total)
    reason = validate_file(part, FILES[name])
    if reason:
        part.unlink(missing_ok=True)  # bad content: the next try starts from scratch
        raise DownloadError(
            f"Downloaded {name} is not valid ({reason}).\n" + _manual_instructions([name], dest)
        )
    os.replace(part, target)
    return target
