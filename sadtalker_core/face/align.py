"""Face alignment math of SadTalker: the Deep3DFaceRecon 224 crop and the FFHQ-style face crop.

Everything here is numpy (PIL/cv2 for resampling) and reproduces the official arithmetic, including
its dtype flow (float32 landmarks, float64 least squares) and quirks, so that the crops match the
recorded goldens pixel for pixel.

Conventions used throughout:
    * Images are (H, W, 3) uint8 RGB arrays.
    * Pixel coordinates are (x, y) with x to the right and the origin at the top-left pixel;
      "y down" means y grows towards the bottom row (array row index), "y up" means the
      Deep3DFaceRecon convention ``y_up = H - 1 - y_down``.
    * Boxes are (left, top, right, bottom) with right/bottom exclusive, like numpy slices.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

from ..errors import ShapeError
from ..types import CropInfo

log = logging.getLogger(__name__)

_DATA_DIR = Path(__file__).resolve().parent / "data"
LM3D_STD_68_FILE = _DATA_DIR / "lm3d_std_68.npy"  # 68x3 float32 standard 3-D landmarks

# 0-based indices into the 68-point (iBUG/Multi-PIE) layout.
_NOSE_TIP = 30
_LEFT_EYE_CORNERS = (36, 39)
_RIGHT_EYE_CORNERS = (42, 45)
_MOUTH_LEFT = 48
_MOUTH_RIGHT = 54
_LEFT_EYE = slice(36, 42)
_RIGHT_EYE = slice(42, 48)


def _check_landmarks(lm: np.ndarray, n: int, dims: tuple[int, ...], what: str) -> np.ndarray:
    lm = np.asarray(lm)
    if lm.ndim != 2 or lm.shape[0] != n or lm.shape[1] not in dims:
        raise ShapeError(
            f"{what} must have shape ({n}, {' or '.join(map(str, dims))}); got {tuple(lm.shape)}."
        )
    return lm


def _check_image(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ShapeError(
            f"{what} must be an (H, W, 3) uint8 RGB array; got {tuple(image.shape)} {image.dtype}."
        )
    return image


# --------------------------------------------------------------------------------------------
# Landmark templates
# --------------------------------------------------------------------------------------------


def landmarks_68_to_5(lm68: np.ndarray) -> np.ndarray:
    """The five alignment points of Deep3DFaceRecon from 68 landmarks.

    Order: [left eye, right eye, nose tip, left mouth corner, right mouth corner], where each eye is
    the mean of its two corners (#36/#39 and #42/#45), the nose tip is #30 and the mouth corners are
    #48 and #54 (0-based). Works for 2-D image points and for the 3-D template alike.

    Args:
        lm68: (68, D) landmarks, D = 2 or 3, any float dtype (kept; means are taken in that dtype).

    Returns:
        (5, D) array of the same dtype and coordinate convention as the input.
    """
    lm68 = _check_landmarks(lm68, 68, (2, 3), "lm68")
    left_eye = np.mean(lm68[list(_LEFT_EYE_CORNERS)], axis=0)
    right_eye = np.mean(lm68[list(_RIGHT_EYE_CORNERS)], axis=0)
    return np.stack(
        [left_eye, right_eye, lm68[_NOSE_TIP], lm68[_MOUTH_LEFT], lm68[_MOUTH_RIGHT]], axis=0
    )


@functools.lru_cache(maxsize=1)
def _lm3d_std_68_cached() -> np.ndarray:
    lm = np.load(LM3D_STD_68_FILE)
    lm = _check_landmarks(lm, 68, (3,), str(LM3D_STD_68_FILE)).astype(np.float32, copy=False)
    lm.setflags(write=False)
    return lm


def load_lm3d_std_68() -> np.ndarray:
    """The standard 68-point 3-D face landmarks of Deep3DFaceRecon (``similarity_Lm3D_all.mat``).

    Returns:
        (68, 3) float32 array (a fresh copy), model units, y up.
    """
    return _lm3d_std_68_cached().copy()


def load_lm3d_std_5() -> np.ndarray:
    """The 5-point 3-D alignment template, ``landmarks_68_to_5`` of the 68-point template.

    Returns:
        (5, 3) float32 array, model units, y up (equals ``lm3d_std_5`` of facerecon.npz).
    """
    return landmarks_68_to_5(_lm3d_std_68_cached())


# --------------------------------------------------------------------------------------------
# Deep3DFaceRecon alignment (224 crop for the ResNet-50)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconAlignConfig:
    """Constants of the Deep3DFaceRecon alignment."""

    target_size: int = 224  # side of the aligned square crop, pixels (the ResNet-50 input)
    rescale_factor: float = 102.0  # image scale = rescale_factor / (template-to-image scale s)


class ReconAlignment(NamedTuple):
    """Result of ``align_for_recon`` (a tuple: ``aligned, lm_aligned, trans_params = ...``).

    Attributes:
        image: (224, 224, 3) uint8 RGB aligned crop (PIL bicubic; zero outside the source frame).
        landmarks: (68, 2) float32 landmarks in the crop, x right, **y up** (Deep3DFaceRecon
            convention). They are offset by ``(w/2 - 112, h/2 - 112)`` of the resized frame, not by
            the integer crop origin, exactly as the official code (sub-pixel difference).
        trans_params: (5,) float32 ``[w0, h0, scale, tx, ty]``: source frame size, the resize factor
            applied to the frame, and the template origin (tx, ty) in the source frame, y up.
    """

    image: np.ndarray
    landmarks: np.ndarray
    trans_params: np.ndarray


def fit_template_similarity(lm5_y_up: np.ndarray, lm3d_5: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares fit of an affine camera ``[sR | t]`` mapping template points to image points.

    Solves for the 8 unknowns of ``p_img = A @ [X, Y, Z, 1]`` (one row for x, one for y) and
    reduces it to a translation and an isotropic scale ``s = (|A[0, :3]| + |A[1, :3]|) / 2``.
    Computed in float64 like the official code.

    Args:
        lm5_y_up: (5, 2) image points, pixel coords, y up.
        lm3d_5: (5, 3) template points.

    Returns:
        t: (2,) float64 translation (tx, ty) in pixels, y up.
        s: template-to-pixel scale (float).
    """
    lm5_y_up = _check_landmarks(lm5_y_up, 5, (2,), "lm5_y_up")
    lm3d_5 = _check_landmarks(lm3d_5, 5, (3,), "lm3d_5")
    n = lm5_y_up.shape[0]
    a = np.zeros((2 * n, 8), dtype=np.float64)
    a[0::2, 0:3] = lm3d_5
    a[0::2, 3] = 1.0
    a[1::2, 4:7] = lm3d_5
    a[1::2, 7] = 1.0
    b = lm5_y_up.reshape(2 * n).astype(np.float64)  # (5, 2) -> (10,) interleaved x, y
    k = np.linalg.lstsq(a, b, rcond=None)[0]
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2.0
    return np.array([k[3], k[7]], dtype=np.float64), float(s)


def align_for_recon(
    image_rgb_u8: np.ndarray,
    lm68_xy: np.ndarray,
    lm3d_std_5: np.ndarray | None = None,
    config: ReconAlignConfig | None = None,
) -> ReconAlignment:
    """Align a face for the 3DMM regressor (Deep3DFaceRecon ``align_img``).

    The 5 alignment points are fitted to the 3-D template; the whole frame is resized by
    ``scale = 102 / s`` with PIL bicubic to ``(int(w0 * scale), int(h0 * scale))`` and a 224 box is
    cut so that the template origin lands at the crop centre.

    Convention:
        ``lm68_xy`` is in pixels of ``image_rgb_u8`` with y **down**; it is converted to float32
        and flipped to y up (``H - 1 - y``) before fitting, as the official code does. The
        returned landmarks and ``trans_params`` are y up (see ``ReconAlignment``).

    Args:
        image_rgb_u8: (H, W, 3) uint8 RGB frame (SadTalker passes the 256x256 crop).
        lm68_xy: (68, 2) landmarks, pixel coords, y down.
        lm3d_std_5: (5, 3) template; defaults to ``load_lm3d_std_5()``.
        config: alignment constants.

    Returns:
        ``ReconAlignment(image, landmarks, trans_params)``.
    """
    cfg = config or ReconAlignConfig()
    image = _check_image(image_rgb_u8, "image_rgb_u8")
    lm = _check_landmarks(lm68_xy, 68, (2,), "lm68_xy").astype(np.float32, copy=True)
    template = load_lm3d_std_5() if lm3d_std_5 is None else lm3d_std_5
    h0, w0 = image.shape[:2]
    lm[:, 1] = h0 - 1 - lm[:, 1]  # y down -> y up (float32, as the official code)

    t, s = fit_template_similarity(landmarks_68_to_5(lm), template)
    scale = cfg.rescale_factor / s
    half = cfg.target_size / 2.0
    w = int(np.float64(w0 * scale).astype(np.int32))
    h = int(np.float64(h0 * scale).astype(np.int32))
    left = int(np.float64(w / 2 - half + (t[0] - w0 / 2) * scale).astype(np.int32))
    top = int(np.float64(h / 2 - half + (h0 / 2 - t[1]) * scale).astype(np.int32))

    resized = Image.fromarray(image).resize((w, h), resample=Image.Resampling.BICUBIC)
    box = (left, top, left + cfg.target_size, top + cfg.target_size)
    aligned = np.asarray(resized.crop(box), dtype=np.uint8).copy()  # zero outside the frame

    lm_new = np.stack([lm[:, 0] - t[0] + w0 / 2, lm[:, 1] - t[1] + h0 / 2], axis=1) * scale
    lm_new = lm_new - np.array([w / 2 - half, h / 2 - half])[None]  # (68, 2), float64
    trans_params = np.array([w0, h0, scale, t[0], t[1]], dtype=np.float32)
    log.debug("recon alignment: scale %.4f, t (%.2f, %.2f), box %s", scale, t[0], t[1], box)
    return ReconAlignment(aligned, lm_new.astype(np.float32), trans_params)


# --------------------------------------------------------------------------------------------
# FFHQ-style face crop (preprocess 'crop' / 'extcrop' / 'full')
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropConfig:
    """Constants of SadTalker's FFHQ-style face crop (``Preprocesser.align_face``)."""

    output_size: int = 512  # official xsize; only decides whether huge faces shrink the frame, px
    eye_scale: float = 2.0  # quad half-size >= eye_scale * |eye_to_eye|
    mouth_scale: float = 1.8  # quad half-size >= mouth_scale * |eye_to_mouth|
    center_shift: float = 0.1  # quad centre = eye_avg + center_shift * eye_to_mouth
    border_frac: float = 0.1  # margin around the quad = max(rint(border_frac * qsize), min_border)
    min_border: int = 3  # smallest margin, pixels


def _oriented_quad(lm68: np.ndarray, cfg: CropConfig) -> tuple[np.ndarray, float]:
    """The FFHQ quad and its side length, with the official float32/float64 flow."""
    lm = _check_landmarks(lm68, 68, (2,), "lm68").astype(np.float32, copy=False)
    eye_left = np.mean(lm[_LEFT_EYE], axis=0)
    eye_right = np.mean(lm[_RIGHT_EYE], axis=0)
    eye_avg = (eye_left + eye_right) * np.float32(0.5)
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[_MOUTH_LEFT] + lm[_MOUTH_RIGHT]) * np.float32(0.5)
    eye_to_mouth = mouth_avg - eye_avg  # float32 (2,)

    # x axis: eye direction plus the mouth direction rotated by 90 degrees (float64 from here).
    flip = np.array([-1.0, 1.0])
    x = eye_to_eye.astype(np.float64) - eye_to_mouth[::-1].astype(np.float64) * flip
    x /= np.hypot(*x)
    half = max(
        float(np.hypot(*eye_to_eye)) * cfg.eye_scale,
        float(np.hypot(*eye_to_mouth)) * cfg.mouth_scale,
    )
    x *= half
    y = x[::-1] * flip
    c = (eye_avg + eye_to_mouth * np.float32(cfg.center_shift)).astype(np.float64)
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])  # (4, 2) float64
    return quad, float(np.hypot(*x) * 2)


def crop_quad_from_landmarks(lm68: np.ndarray, config: CropConfig | None = None) -> np.ndarray:
    """The oriented FFHQ face quad of 68 landmarks.

    Convention:
        Pixel coords of the image the landmarks belong to, x right, y down.

    Args:
        lm68: (68, 2) landmarks (converted to float32 as in the official code).
        config: crop constants.

    Returns:
        (4, 2) float64 corners [c-x-y, c-x+y, c+x+y, c+x-y].
    """
    return _oriented_quad(lm68, config or CropConfig())[0]


def compute_crop_info(
    lm68: np.ndarray,
    image_size: tuple[int, int],
    extended: bool = False,
    config: CropConfig | None = None,
) -> CropInfo:
    """Crop geometry of SadTalker's ``crop`` (``extended=False``) / ``extcrop`` (``True``) modes.

    Convention:
        ``lm68`` in pixels of the original image, x right, y down; ``image_size`` = (W, H).
        See ``CropInfo`` for the frame of every output field.

    Args:
        lm68: (68, 2) landmarks.
        image_size: (W, H) of the image.
        extended: ``extcrop`` (keep the whole crop box) instead of ``crop``.
        config: crop constants.

    Returns:
        The ``CropInfo``.
    """
    cfg = config or CropConfig()
    w0, h0 = int(image_size[0]), int(image_size[1])
    quad, qsize = _oriented_quad(lm68, cfg)

    shrink = int(np.floor(qsize / cfg.output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(w0) / shrink)), int(np.rint(float(h0) / shrink)))
        quad = quad / shrink
        qsize = qsize / shrink
    else:
        shrink = 1
        rsize = (w0, h0)
    rw, rh = rsize

    border = max(int(np.rint(qsize * cfg.border_frac)), cfg.min_border)
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    crop_box = (
        max(int(lo[0]) - border, 0),
        max(int(lo[1]) - border, 0),
        min(int(hi[0]) + border, rw),
        min(int(hi[1]) + border, rh),
    )
    shifted = quad
    if crop_box[2] - crop_box[0] < rw or crop_box[3] - crop_box[1] < rh:
        shifted = quad - np.array(crop_box[:2], dtype=np.float64)

    q = (shifted + 0.5).reshape(-1)  # (4, 2) -> (8,) = x0 y0 x1 y1 x2 y2 x3 y3
    rect = (
        float(max(min(q[0], q[2]), 0)),
        float(max(min(q[1], q[7]), 0)),
        float(min(max(q[4], q[6]), rw)),
        float(min(max(q[3], q[5]), rw)),  # official quirk: clamped with the width
    )
    return CropInfo(
        original_size=(w0, h0),
        resized_size=rsize,
        shrink=shrink,
        quad=tuple((float(px), float(py)) for px, py in quad),
        crop_box=crop_box,
        rect=rect,
        extended=bool(extended),
    )


def apply_crop(image_rgb_u8: np.ndarray, info: CropInfo) -> np.ndarray:
    """Cut the crop described by ``info`` out of a frame (official ``Preprocesser.crop`` loop body).

    The frame is cv2-resized (bilinear) to ``info.resized_size`` (a copy when no shrink), cut to the
    crop box and, unless ``info.extended``, to ``info.rect_int``.

    Args:
        image_rgb_u8: (H, W, 3) uint8 RGB frame of size ``info.original_size``.
        info: from ``compute_crop_info``.

    Returns:
        (h, w, 3) uint8 RGB crop (a copy).
    """
    image = _check_image(image_rgb_u8, "image_rgb_u8")
    if (image.shape[1], image.shape[0]) != tuple(info.original_size):
        raise ShapeError(
            f"Frame is {image.shape[1]}x{image.shape[0]} but the crop was computed for "
            f"{info.original_size[0]}x{info.original_size[1]}. Use frames of one size."
        )
    resized = cv2.resize(image, info.resized_size)
    clx, cly, crx, cry = info.crop_box
    out = resized[cly:cry, clx:crx]
    if not info.extended:
        lx, ly, rx, ry = info.rect_int
        out = out[ly:ry, lx:rx]
    return np.ascontiguousarray(out)


def crop_face(
    image_rgb_u8: np.ndarray,
    lm68: np.ndarray,
    extended: bool = False,
    config: CropConfig | None = None,
) -> tuple[np.ndarray, CropInfo]:
    """``compute_crop_info`` + ``apply_crop`` for one frame.

    Args:
        image_rgb_u8: (H, W, 3) uint8 RGB.
        lm68: (68, 2) landmarks, pixels of that image, y down.
        extended: ``extcrop`` instead of ``crop``.
        config: crop constants.

    Returns:
        (crop (h, w, 3) uint8 RGB, CropInfo). Resize with ``resize_square`` for the networks.
    """
    image = _check_image(image_rgb_u8, "image_rgb_u8")
    info = compute_crop_info(lm68, (image.shape[1], image.shape[0]), extended, config)
    return apply_crop(image, info), info


def resize_square(image_rgb_u8: np.ndarray, size: int) -> np.ndarray:
    """cv2 bilinear resize to (size, size), as SadTalker does for every crop/frame.

    Args:
        image_rgb_u8: (H, W, 3) uint8.
        size: output side, pixels (256 or 512).

    Returns:
        (size, size, 3) uint8.
    """
    image = _check_image(image_rgb_u8, "image_rgb_u8")
    return cv2.resize(image, (int(size), int(size)))
