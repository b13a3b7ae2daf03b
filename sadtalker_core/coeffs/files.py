"""Coefficient files: source and reference rows from .npz/.mat, the official .mat export."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import SadTalkerError
from ..io.npz import COEFFS_FORMAT, FACE_FORMAT, atomic_file, load_npz, npz_format
from ..types import Coeffs, Face
from .generate import MODEL_FPS, ROW_DIM, resample_coeffs


def _load_mat_rows(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except (OSError, ValueError, TypeError) as e:
        raise SadTalkerError(f"{path} is not a readable .mat file ({e}).") from e
    if "coeff_3dmm" not in mat:
        raise SadTalkerError(
            f"{path} has no 'coeff_3dmm' entry (keys: {sorted(k for k in mat if not k.startswith('__'))}); "
            "it is not a SadTalker coefficient file."
        )
    return np.asarray(mat["coeff_3dmm"], np.float32)


def load_coeff_rows(path: str | os.PathLike) -> np.ndarray:
    """Per-frame coefficient rows of a reference video (for ``ref_eyeblink`` / ``ref_pose``).

    Reads an official ``.mat`` (``coeff_3dmm`` (N, 70/73)), a coefficient-stage ``.npz``
    (resampled to 25 fps), a face ``.npz`` (its one row), or any ``.npz`` with a 2-D
    ``coeff_3dmm`` or ``coeffs`` array (taken as 25 fps).

    Returns:
        (N, >= 70) float32 rows at 25 fps.

    Raises:
        SadTalkerError: unreadable file or no coefficient rows in it.
    """
    path = Path(path)
    if not path.is_file():
        raise SadTalkerError(f"Coefficient file not found: {path}.")
    if path.suffix.lower() == ".mat":
        rows = _load_mat_rows(path)
    else:
        arrays = load_npz(path)
        fmt = npz_format(arrays)
        if fmt == COEFFS_FORMAT:
            c = Coeffs.load(path)
            n = max(1, int(math.floor(c.duration * MODEL_FPS + 0.5)))
            rows = resample_coeffs(c.coeffs, c.fps, MODEL_FPS, n)
        elif fmt == FACE_FORMAT:
            rows = Face.load(path).coeff_3dmm[None]
        elif "coeff_3dmm" in arrays or "coeffs" in arrays:
            rows = arrays.get("coeff_3dmm", arrays.get("coeffs"))
        else:
            raise SadTalkerError(
                f"{path} holds no coefficient rows ('coeff_3dmm' or 'coeffs'); keys: "
                f"{sorted(arrays)}."
            )
    rows = np.asarray(rows, np.float32)
    if rows.ndim == 1:
        rows = rows[None]
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] < ROW_DIM:
        raise SadTalkerError(
            f"{path}: coefficient rows must be (N, >= 70), got shape {rows.shape}."
        )
    return rows


def load_source(path: str | os.PathLike) -> Face | np.ndarray:
    """The source for :func:`generate_coeffs` from a face ``.npz`` or an official ``.mat``.

    Returns:
        the :class:`Face` of a face ``.npz``, else the first (70+,) coefficient row.
    """
    path = Path(path)
    if (
        path.suffix.lower() == ".npz"
        and path.is_file()
        and npz_format(load_npz(path)) == FACE_FORMAT
    ):
        return Face.load(path)
    return load_coeff_rows(path)[0]


def save_mat(coeffs: Coeffs, path: str | os.PathLike) -> Path:
    """Write the rows in the official layout: a MATLAB file with ``coeff_3dmm`` (T, 70) float32.

    This is what the official audio-to-coefficient step writes (no other key); the official
    renderer reads it as 25 fps rows. Written atomically (temp file + rename).
    """
    from scipy.io import savemat

    path = Path(path)
    with atomic_file(path) as f:
        savemat(f, {"coeff_3dmm": np.asarray(coeffs.coeffs, np.float32)})
    return path
