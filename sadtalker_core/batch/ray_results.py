"""How a Ray worker's video reaches its output path (``results`` of a ``RayBatch``):

- ``shared``: every worker writes its clip to the output path (shared storage mounted at the
  same path everywhere);
- ``driver``: every worker renders to a private temporary file and sends the MP4 bytes back;
  the driver writes them (outputs local to the driver);
- ``auto`` (default): the driver leaves a marker file in each output folder
  (:func:`mark_folders`); a worker that finds it there and may write there
  (:func:`writable_folders`) writes directly, any other sends the bytes back
  (:func:`returns_bytes`, :func:`write_returned`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from ..errors import SadTalkerError
from ..io.npz import atomic_file
from .jobs import ClipResult, Job

RESULT_MODES = ("auto", "shared", "driver")
_MARKER = ".sadtalker-ray-{}"


def check_mode(results: str) -> None:
    if results not in RESULT_MODES:
        raise SadTalkerError(f"results must be one of {', '.join(RESULT_MODES)}; got {results!r}.")


def mark_folders(results: str, jobs: Iterable[Job], markers: list[Path]) -> list[tuple[str, str]]:
    """Make the jobs' output folders; in ``auto`` mode leave a fresh marker file in each,
    appended to ``markers`` as it is made (the driver deletes them after the run, even one
    that stopped half-way). Returns the ``(folder, marker name)`` pairs the workers check
    (none for ``driver``: the workers write nothing)."""
    if results == "driver":
        return []
    marker = _MARKER.format(uuid.uuid4().hex)
    folders = []
    for folder in sorted({j.output.absolute().parent for j in jobs}):
        folder.mkdir(parents=True, exist_ok=True)
        if results == "auto":
            (folder / marker).touch()
            markers.append(folder / marker)
        folders.append((str(folder), marker))
    return folders


def writable_folders(folders: list[tuple[str, str]]) -> list[str]:
    """On a worker: the folders whose marker it sees (the same storage as the driver's) and
    where it may write."""
    return [f for f, marker in folders if (Path(f) / marker).exists() and os.access(f, os.W_OK)]


def returns_bytes(results: str, job: Job, writable: list[str]) -> bool:
    """Whether the worker with these ``writable`` folders sends ``job``'s video back."""
    folder = str(job.output.absolute().parent)
    return results == "driver" or (results == "auto" and folder not in writable)


def write_returned(job: Job, result: ClipResult) -> None:
    """On the driver: write a video a worker sent back (``result.data``) to the output path,
    whole or not at all, and drop the bytes."""
    if result.data is not None:
        with atomic_file(job.output) as f:
            f.write(result.data)
        result.data = None
