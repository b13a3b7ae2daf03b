"""Where the faces are in the frames to enhance: alignment points, caller-supplied landmarks and
the mapping of the extract stage's known face into rendered frames (no re-detection needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import cv2
import numpy as np
import torch

from ..errors import ShapeError
from ..types import Face

# Eye centres, nose tip, mouth corners (x, y) of a 512 px FFHQ-aligned face (facexlib's template).
FACE_TEMPLATE = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)

# Landmarks of a batch of frames, as ``FaceEnhancer.enhance`` takes them: None (detect in every
# frame); a (B, 68, 2) / (B, 5, 2) array (one face per frame); or one entry per frame, each None
# (detect in that frame), a (68, 2) / (5, 2) array (one face) or (F, 68, 2) / (F, 5, 2) (F faces,
# F = 0: the frame has no face). Frame pixels, x right, y down, pixel centres at integers.
FrameLandmarks = Union[np.ndarray, Sequence[Union[np.ndarray, None]], None]


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """iBUG-68 landmarks (or five points already) -> (5, 2) float32: eye centres, nose tip, mouth
    corners, in template order (the first eye and mouth corner are the ones on the image's left).
    """
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.shape == (5, 2):
        return lm
    if lm.shape != (68, 2):
        raise ShapeError(f"face landmarks must be (68, 2) or (5, 2); got {lm.shape}.")
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]]).astype(
        np.float32
    )


def alignment(points: np.ndarray) -> np.ndarray:
    """(2, 3) similarity transform (rotation, uniform scale, shift) taking frame pixels to
    template pixels, fitted robustly (least median of squares) to the five points."""
    matrix, _ = cv2.estimateAffinePartial2D(
        np.asarray(points, np.float32), FACE_TEMPLATE, method=cv2.LMEDS
    )
    if matrix is None:  # degenerate points: fall back to the plain least-squares fit
        matrix, _ = cv2.estimateAffinePartial2D(
            np.asarray(points, np.float32), FACE_TEMPLATE, method=0
        )
    return matrix


def points_per_frame(landmarks: FrameLandmarks, batch: int) -> list[list[np.ndarray] | None]:
    """Normalise ``FrameLandmarks`` to one entry per frame: None (detect) or a list of (5, 2)
    point sets (possibly empty).

    Raises:
        ShapeError: wrong frame count or landmark shape.
    """
    if landmarks is None:
        return [None] * batch
    if isinstance(landmarks, (np.ndarray, torch.Tensor)):
        arr = np.asarray(landmarks.cpu() if isinstance(landmarks, torch.Tensor) else landmarks)
        if arr.ndim != 3:
            raise ShapeError(f"landmarks array must be (B, 68, 2) or (B, 5, 2); got {arr.shape}.")
        landmarks = list(arr)
    if len(landmarks) != batch:
        raise ShapeError(f"landmarks for {len(landmarks)} frames; the batch has {batch}.")
    out: list[list[np.ndarray] | None] = []
    for lm in landmarks:
        if lm is None:
            out.append(None)
            continue
        a = np.asarray(lm, dtype=np.float32)
        faces = [a] if a.ndim == 2 else list(a)
        out.append([five_points(f) for f in faces])
    return out


def _box_of_render(face: Face) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in source-image pixels of the area a render frame shows."""
    if face.crop_info is None:  # resize mode: the whole picture
        h, w = face.image.shape[:2]
        return 0.0, 0.0, float(w), float(h)
    return tuple(float(v) for v in face.crop_info.image_box_original)


def frame_from_render(face: Face, frame_hw: tuple[int, int], pasted: bool) -> np.ndarray:
    """(2, 3) affine map: render pixels (the renderer's S x S output) -> pixels of the frames the
    enhancer gets.

    Convention:
        Pixel centres at integers, edges at -0.5 and n - 0.5 (align_corners=False resizes).

    Args:
        face: the extract-stage result the clip was rendered from.
        frame_hw: (H, W) of the frames handed to the enhancer.
        pasted: True for frames pasted into the source picture (full / extfull; the paste box of
            ``paste.paste_box``), False for face frames (the render resized to ``frame_hw``).
    """
    s = float(face.size)
    fh, fw = frame_hw
    if pasted:
        from ..paste import paste_box

        x0, y0, x1, y1 = paste_box(face)
        ih, iw = face.image.shape[:2]
        kx, ky = fw / iw, fh / ih  # the frames may be the picture resized
        ax, ay = (x1 - x0) / s * kx, (y1 - y0) / s * ky
        bx, by = x0 * kx, y0 * ky
    else:
        ax, ay, bx, by = fw / s, fh / s, 0.0, 0.0
    # p = (r + 0.5) * a + b - 0.5
    return np.array([[ax, 0, 0.5 * ax + bx - 0.5], [0, ay, 0.5 * ay + by - 0.5]], np.float64)


def render_from_source(face: Face) -> np.ndarray:
    """(2, 3) affine map: source-image pixels -> render pixels (same convention)."""
    x0, y0, x1, y1 = _box_of_render(face)
    s = float(face.size)
    ax, ay = s / (x1 - x0), s / (y1 - y0)
    return np.array([[ax, 0, (0.5 - x0) * ax - 0.5], [0, ay, (0.5 - y0) * ay - 0.5]], np.float64)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def source_landmarks_in_frames(face: Face, frame_hw: tuple[int, int], pasted: bool) -> np.ndarray:
    """The source's 68 landmarks (``face.landmarks``) in pixels of the enhancer's frames.

    Exact for the source picture and for frames whose head pose equals the source's (``still``
    clips with little motion); for a moving head use ``track_landmarks``.

    Returns:
        (68, 2) float32.
    """
    m = render_from_source(face)
    lm = _apply(m, np.asarray(face.landmarks, np.float64))
    return _apply(frame_from_render(face, frame_hw, pasted), lm).astype(np.float32)


def _similarity_fit(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) least-squares similarity maps src -> dst (Umeyama without reflection),
    for (B, K, 2) point sets."""
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    a, b = src - mu_s, dst - mu_d  # (B, K, 2)
    # complex form: dst ~ z * src with z = sum(conj(a) * b) / sum(|a|^2)
    denom = (a * a).sum((1, 2)).clamp_min(1e-12)  # (B,)
    c = ((a * b).sum((1, 2))) / denom  # real part: s cos
    d = (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]).sum(1) / denom  # imaginary: s sin
    rot = torch.stack([torch.stack([c, -d], -1), torch.stack([d, c], -1)], 1)  # (B, 2, 2)
    t = mu_d[:, 0] - torch.einsum("bij,bj->bi", rot, mu_s[:, 0])  # (B, 2)
    return torch.cat([rot, t[..., None]], -1)


def track_landmarks(
    face: Face,
    kp_source: torch.Tensor | np.ndarray,
    kp_driving: torch.Tensor | np.ndarray,
    frame_hw: tuple[int, int],
    pasted: bool,
) -> np.ndarray:
    """Per-frame landmarks of a rendered clip from the renderer's own keypoints.

    The renderer moves the source face by warping it from ``kp_source`` to ``kp_driving``; the
    least-squares similarity between the two keypoint sets (x, y only) is the head's in-plane
    motion, which is applied to the source's landmarks.

    Convention:
        Keypoints in the renderer's normalised coordinates (x, y in [-1, 1] over the S x S
        render, x right, y down); landmarks returned in pixels of the enhancer's frames.

    Limits: first order only. Out-of-plane rotation (yaw, pitch) foreshortens the face, which a
    similarity cannot show; expression moves the mouth corners. Both stay within what the 512
    alignment tolerates for SadTalker's pose range (a few degrees to ~20); beyond that, detect.

    Args:
        face: the extract-stage result the clip was rendered from.
        kp_source: (K, D) or (1, K, D), D >= 2: the source's keypoints (``kp_source``).
        kp_driving: (B, K, D): each frame's driving keypoints.
        frame_hw, pasted: the enhancer's frames, as in ``frame_from_render``.

    Returns:
        (B, 68, 2) float32 landmarks, one face per frame.
    """
    src = torch.as_tensor(kp_source).detach().double().cpu()[..., :2].reshape(-1, 2)  # (K, 2)
    drv = torch.as_tensor(kp_driving).detach().double().cpu()[..., :2]  # (B, K, 2)
    if drv.ndim != 3 or drv.shape[1] != src.shape[0]:
        raise ShapeError(
            f"kp_driving must be (B, {src.shape[0]}, D); got {tuple(drv.shape)} "
            f"(kp_source {tuple(src.shape)})."
        )
    moves = _similarity_fit(src.expand_as(drv), drv).numpy()  # (B, 2, 3) normalised coords
    s = float(face.size)
    # render pixels <-> normalised: n = (r + 0.5) * 2 / S - 1
    norm_from_render = np.array([[2 / s, 0, 1 / s - 1], [0, 2 / s, 1 / s - 1]])
    lm = _apply(render_from_source(face), np.asarray(face.landmarks, np.float64))
    lm_n = _apply(norm_from_render, lm)  # (68, 2)
    moved = np.einsum("bij,kj->bki", moves[:, :, :2], lm_n) + moves[:, None, :, 2]  # (B, 68, 2)
    r = (moved + 1) * (s / 2) - 0.5  # normalised -> render pixels
    return _apply(frame_from_render(face, frame_hw, pasted), r).astype(np.float32)
