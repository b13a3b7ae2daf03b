"""Stage files: atomic writes and ``.npz`` reading with a format tag."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import SadTalkerError

FACE_FORMAT = "sadtalker-face-v1"
COEFFS_FORMAT = "sadtalker-coeffs-v1"


def temp_path(path: Path) -> Path:
    """The hidden temporary name ``path`` is written under before it is renamed into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file that becomes ``path`` only when the block ends without an error:
    never a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    """Write ``arrays`` compressed to ``path`` (``.npz`` appended if missing), atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    with atomic_file(path) as f:
        np.savez_compressed(f, **arrays)
    return path


def load_npz(path: str | os.PathLike, expected: str | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles); with ``expected``, its ``format`` must match.

    Raises:
        SadTalkerError: unreadable file, or another format than ``expected``.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise SadTalkerError(f"{path} is not a readable .npz file ({e}).") from e
    if expected is not None:
        fmt = str(arrays.get("format", ""))
        if fmt != expected:
            raise SadTalkerError(f"{path} is not a {expected} file (format: {fmt or 'unknown'}).")
    return arrays


def npz_format(arrays: dict[str, np.ndarray]) -> str:
    """The format tag of arrays read by :func:`load_npz` ('' when untagged)."""
    return str(arrays.get("format", ""))
