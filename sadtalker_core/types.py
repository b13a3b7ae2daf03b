"""Typed results passed between the stages (extract -> coefficients -> render), serialisable as .npz."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .io.npz import COEFFS_FORMAT, FACE_FORMAT, load_npz, save_npz


@dataclass(frozen=True)
class CropInfo:
    """Everything needed to cut a face crop and to paste a generated face back.

    Frames: "original" = the input image; "resized" = the input after the optional shrink
    (``resized_size == original_size`` unless a face larger than ~4 * output_size px forced
    ``shrink > 1``); "box" = the crop box of the resized frame, origin at its top-left.
    All coordinates are pixels, x right, y down.

    Attributes:
        original_size: (W, H) of the input image.
        resized_size: (W', H') the image is cv2-resized to before cutting (official ``rsize``).
        shrink: integer shrink factor (1 = none).
        quad: oriented face quad in the resized frame, four (x, y) float corners
            [c-x-y, c-x+y, c+x+y, c+x-y] (top-left, bottom-left, bottom-right, top-right of an
            upright face); ``quad_xy`` gives it as a (4, 2) float64 array.
        crop_box: (left, top, right, bottom) ints in the resized frame: the quad's bounds grown by
            the border and clamped to the image (official ``crop``).
        rect: (lx, ly, rx, ry) floats in the box frame: the +0.5-shifted quad's bounds, clamped to
            [0, W'] (``ry`` is clamped with the image **width**, as in the official code;
            official ``quad`` return value).
        extended: True for ``extcrop`` (the image is the whole crop box), False for ``crop``
            (the image is further cut to ``rect``).
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    shrink: int
    quad: tuple[tuple[float, float], ...]
    crop_box: tuple[int, int, int, int]
    rect: tuple[float, float, float, float]
    extended: bool

    @property
    def quad_xy(self) -> np.ndarray:
        """``quad`` as a (4, 2) float64 array (resized frame)."""
        return np.array(self.quad, dtype=np.float64)

    @property
    def rect_int(self) -> tuple[int, int, int, int]:
        """``rect`` truncated with ``int()`` (box frame), the slice used to cut the ``crop`` image."""
        lx, ly, rx, ry = self.rect
        return int(lx), int(ly), int(rx), int(ry)

    @property
    def face_size(self) -> tuple[int, int]:
        """(w, h) = (int(rx) - int(lx), int(ry) - int(ly)): official ``crop_info[0]``.

        It is the size of the ``crop`` image even in ``extcrop`` mode (official behaviour); output
        frames are resized to width ``size`` and height ``int(size * h / w)``.
        """
        lx, ly, rx, ry = self.rect_int
        return rx - lx, ry - ly

    @property
    def face_box(self) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) of the ``crop`` image in the resized frame (crop box origin + rect_int)."""
        clx, cly = self.crop_box[:2]
        lx, ly, rx, ry = self.rect_int
        return clx + lx, cly + ly, clx + rx, cly + ry

    @property
    def image_box(self) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) in the resized frame of the image this crop produces (mode-dependent).

        The official paste-back uses these numbers directly on the original frame; they are only
        original-frame coordinates when ``shrink == 1`` (see ``image_box_original``).
        """
        return self.crop_box if self.extended else self.face_box

    @property
    def image_box_original(self) -> tuple[float, float, float, float]:
        """``image_box`` scaled to the original frame (identical to it when ``shrink == 1``)."""
        sx = self.original_size[0] / self.resized_size[0]
        sy = self.original_size[1] / self.resized_size[1]
        x1, y1, x2, y2 = self.image_box
        return x1 * sx, y1 * sy, x2 * sx, y2 * sy


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
            "format": np.array(FACE_FORMAT),
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
        return save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Face:
        a = load_npz(path, FACE_FORMAT)
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


def camera_path(keypoints: Sequence[float], num_frames: int) -> np.ndarray:
    """Spread angle keypoints over a clip, like the official ``--input_yaw/pitch/roll``.

    One keypoint holds the angle for the whole clip. Several keypoints are joined by straight
    legs, and each leg gets a share of the frames proportional to the angle it covers (constant
    angular speed). Unlike the official code, the last frame reaches the last keypoint exactly
    and repeated keypoints do not fail (a zero-length leg takes no frames).

    Args:
        keypoints: angles in degrees, in order.
        num_frames: T.

    Returns:
        (T,) float32 degrees.
    """
    k = np.asarray(keypoints, np.float64).reshape(-1)
    if k.size == 0:
        raise ValueError("camera_path needs at least one keypoint.")
    if num_frames == 1 or k.size == 1:
        return np.full(num_frames, k[0], np.float32)
    k = k[np.concatenate([[True], np.diff(k) != 0])]  # drop zero-length legs
    if k.size == 1:
        return np.full(num_frames, k[0], np.float32)
    arc = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(k)))])  # (K,) degrees travelled
    s = np.linspace(0.0, arc[-1], num_frames)  # (T,) equal angular steps
    return np.interp(s, arc, k).astype(np.float32)


AXES = ("yaw", "pitch", "roll")


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
        input_yaw, input_pitch, input_roll: angle keypoints in degrees the renderer's head
            angles follow over the clip (``camera_degrees``), or None.
    """

    coeffs: np.ndarray
    fps: float
    audio: np.ndarray
    sample_rate: int = 16000
    options: dict = field(default_factory=dict)
    input_yaw: tuple[float, ...] | None = None
    input_pitch: tuple[float, ...] | None = None
    input_roll: tuple[float, ...] | None = None

    def __post_init__(self):
        for axis in AXES:  # files saved before the typed fields keep them in ``options``
            keys = getattr(self, f"input_{axis}")
            if keys is None:
                keys = self.options.get(f"input_{axis}")
            if keys is not None:
                keys = tuple(float(k) for k in np.asarray(keys, np.float64).reshape(-1))
            object.__setattr__(self, f"input_{axis}", keys or None)

    def camera_degrees(self) -> dict[str, np.ndarray]:
        """Per-frame head angles (degrees) that replace the renderer's predicted ones: a (T,)
        float32 path for each of 'yaw', 'pitch', 'roll' requested (``camera_path`` of the
        keypoints); empty when none was."""
        out = {}
        for axis in AXES:
            keys = getattr(self, f"input_{axis}")
            if keys:
                out[axis] = camera_path(keys, self.num_frames)
        return out

    @property
    def num_frames(self) -> int:
        return int(self.coeffs.shape[0])

    @property
    def duration(self) -> float:
        """Seconds of video the rows cover."""
        return self.num_frames / self.fps

    def save(self, path: str | os.PathLike) -> Path:
        """Save as a compressed ``.npz`` (written atomically); returns the path written."""
        return save_npz(
            path,
            {
                "format": np.array(COEFFS_FORMAT),
                "coeffs": self.coeffs,
                "audio": self.audio,
                "meta": np.array(
                    json.dumps(
                        {
                            "fps": self.fps,
                            "sample_rate": self.sample_rate,
                            "options": self.options,
                            **{f"input_{a}": getattr(self, f"input_{a}") for a in AXES},
                        }
                    )
                ),
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Coeffs:
        a = load_npz(path, COEFFS_FORMAT)
        meta = json.loads(str(a["meta"]))
        angles = {f"input_{a}": meta.get(f"input_{a}") for a in AXES}
        return cls(
            a["coeffs"],
            float(meta["fps"]),
            a["audio"],
            int(meta["sample_rate"]),
            meta["options"],
            **angles,
        )
