"""Typed results passed between the stages (extract -> coefficients -> render), serialisable as .npz."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SadTalkerError
from .face.align import CropInfo

PREPROCESS_MODES = ("crop", "extcrop", "resize", "full", "extfull")
_FORMAT = "sadtalker-face-v1"
_COEFFS_FORMAT = "sadtalker-coeffs-v1"


def _save_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    """Write ``arrays`` to ``path`` atomically (temp file + rename): never a half-written file."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _load_npz(path: str | os.PathLike, expected: str) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise SadTalkerError(f"{path} is not a readable .npz file ({e}).") from e
    fmt = str(arrays.get("format", ""))
    if fmt != expected:
        raise SadTalkerError(f"{path} is not a {expected} file (format: {fmt or 'unknown'}).")
    return arrays


@dataclass(frozen=True)
class Face:
    """Result of the 3DMM extract stage for one source picture.

    Attributes:
        image: (H, W, 3) uint8 RGB source at full resolution (transparency composited).
        alpha: (H, W) uint8 alpha of the source, or None when it had none (kept for paste-back).
        crop: (size, size, 3) uint8 RGB face crop: the renderer's source image.
        crop_info: where the crop lies in ``image`` (None in ``resize`` mode: the whole picture).
        landmarks: (68, 2) float32 x, y of the detected face in ``image`` pixels (y down).
        coeffs: (257,) float32 reconstruction output: id 80, exp 64, tex 80, angle 3 (radians),
            gamma 27, trans 3.
        coeff_3dmm: (73,) float32 renderer row ``[exp 64, angle 3, trans 3, s, tx, ty]``, the last
            three being ``trans_params[2:5]`` of the alignment.
        trans_params: (5,) float32 ``[w0, h0, scale, tx, ty]`` of the 224 alignment.
        preprocess: one of ``PREPROCESS_MODES``.
        size: render resolution, 256 or 512.
        detector: name of the detector backend that found the face.
        face_index: which face of the picture (0 = largest).
    """

    image: np.ndarray
    alpha: np.ndarray | None
    crop: np.ndarray
    crop_info: CropInfo | None
    landmarks: np.ndarray
    coeffs: np.ndarray
    coeff_3dmm: np.ndarray
    trans_params: np.ndarray
    preprocess: str
    size: int
    detector: str = ""
    face_index: int = 0

    @property
    def ref_coeffs(self) -> np.ndarray:
        """(70,) float32 ``[exp 64, angle 3, trans 3]``: the reference row of the coefficient stage."""
        return self.coeff_3dmm[:70]

    def save(self, path: str | os.PathLike) -> Path:
        """Save as a compressed ``.npz`` (written atomically); returns the path written."""
        arrays: dict[str, Any] = {
            "format": np.array(_FORMAT),
            "image": self.image,
            "crop": self.crop,
            "landmarks": self.landmarks,
            "coeffs": self.coeffs,
            "coeff_3dmm": self.coeff_3dmm,
            "trans_params": self.trans_params,
            "meta": np.array(
                json.dumps(
                    {
                        "preprocess": self.preprocess,
                        "size": self.size,
                        "detector": self.detector,
                        "face_index": self.face_index,
                        "crop_info": None if self.crop_info is None else asdict(self.crop_info),
                    }
                )
            ),
        }
        if self.alpha is not None:
            arrays["alpha"] = self.alpha
        return _save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Face:
        a = _load_npz(path, _FORMAT)
        meta = json.loads(str(a["meta"]))
        info = meta["crop_info"]
        if info is not None:
            info = CropInfo(
                **{
                    f.name: _as_tuple(info[f.name])
                    if isinstance(info[f.name], list)
                    else info[f.name]
                    for f in fields(CropInfo)
                }
            )
        return cls(
            image=a["image"],
            alpha=a.get("alpha"),
            crop=a["crop"],
            crop_info=info,
            landmarks=a["landmarks"],
            coeffs=a["coeffs"],
            coeff_3dmm=a["coeff_3dmm"],
            trans_params=a["trans_params"],
            preprocess=meta["preprocess"],
            size=int(meta["size"]),
            detector=meta["detector"],
            face_index=int(meta["face_index"]),
        )


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list) else x


@dataclass(frozen=True)
class Coeffs:
    """Result of the coefficient stage: one row of motion coefficients per output video frame.

    Attributes:
        coeffs: (T, 70) float32 per frame: expression 0:64, angles 64:67 (radians; pitch, yaw,
            roll as the 3DMM stores them), translation 67:70.
        fps: frame rate of the rows (the models run at 25; other rates are resampled).
        audio: (N,) float32 mono waveform at ``sample_rate`` that the rows belong to, trimmed or
            zero-padded to exactly T / fps seconds.
        sample_rate: Hz of ``audio`` (16000).
        options: the options that produced the rows (seed, pose_style, still, ...), JSON-able.
    """

    coeffs: np.ndarray
    fps: float
    audio: np.ndarray
    sample_rate: int = 16000
    options: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.coeffs.shape[0])

    @property
    def duration(self) -> float:
        """Seconds of video the rows cover."""
        return self.num_frames / self.fps

    def save(self, path: str | os.PathLike) -> Path:
        """Save as a compressed ``.npz`` (written atomically); returns the path written."""
        return _save_npz(
            path,
            {
                "format": np.array(_COEFFS_FORMAT),
                "coeffs": self.coeffs,
                "audio": self.audio,
                "meta": np.array(
                    json.dumps(
                        {"fps": self.fps, "sample_rate": self.sample_rate, "options": self.options}
                    )
                ),
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Coeffs:
        a = _load_npz(path, _COEFFS_FORMAT)
        meta = json.loads(str(a["meta"]))
        return cls(
            a["coeffs"], float(meta["fps"]), a["audio"], int(meta["sample_rate"]), meta["options"]
        )
