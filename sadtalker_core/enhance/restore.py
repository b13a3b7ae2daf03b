"""Enhance stage: GFPGAN v1.4 / RestoreFormer face restoration of rendered frames.

What the official ``--enhancer`` does, on the device and in batches: every face of a frame is
found (68 landmarks -> eye centres, nose tip, mouth corners), warped by a similarity transform onto
the 512 px FFHQ-aligned template the restorers were trained on, restored, warped back into the
frame enlarged ``upscale`` times (the official: 2) and blended in with a soft mask.

Differences from the official (GFPGANer): the networks run on batches of faces; the StyleGAN noise
of GFPGAN is the checkpoint's fixed noise instead of fresh noise per frame (no texture flicker
from frame to frame, same result for the same input); the paste mask is a soft-edged square in
template space (the official uses a face-parsing network when its extra file is present); the
background is resized with antialiased bicubic interpolation instead of Lanczos.

The architectures come from spandrel (ComfyUI ships it; ``pip install spandrel`` elsewhere),
loaded from the official ``GFPGANv1.4.pth`` / ``RestoreFormer.pth`` read safely by our own
checkpoint layer.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MissingDependencyError, UnsupportedCheckpointError
from ..face.detect import DETECTORS, detect_faces, get_detector
from ..models.registry import (
    FILES,
    default_checkpoint_dirs,
    file_key,
    read_state_dict,
    require_file,
)
from ..render.infer import to_uint8

log = logging.getLogger(__name__)

# enhancer name (the official --enhancer values) -> (checkpoint file, spandrel architecture id)
ENHANCERS: dict[str, tuple[str, str]] = {
    "gfpgan": ("GFPGANv1.4.pth", "GFPGAN"),
    "RestoreFormer": ("RestoreFormer.pth", "RestoreFormer"),
}
FACE_SIZE = 512  # both restorers work on 512x512 aligned faces
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
FILL_RGB = (132 / 255, 133 / 255, 135 / 255)  # crop area outside the frame (the official's grey)
# Soft paste mask in template pixels: 1 from MASK_INSET + MASK_RAMP inwards, 0 within MASK_INSET
# of the crop border (about what the official's erosion + Gaussian blur give on a 512 face).
MASK_INSET, MASK_RAMP = 28.0, 40.0


@dataclass(frozen=True)
class EnhanceConfig:
    """Options of the enhance stage."""

    enhancer: str = "gfpgan"  # gfpgan (GFPGAN v1.4) | RestoreFormer
    upscale: int = 2  # output frames are this many times larger (the official enhancer: 2)
    detector: str = "auto"  # face finder per frame: auto | official | face_alignment | dlib
    batch_size: int = 4  # faces per restoration call
    min_eye_distance: float = 5.0  # pixels; smaller faces are left as they are (as officially)

    def __post_init__(self):
        if self.enhancer not in ENHANCERS:
            raise ValueError(
                f"enhancer must be one of {', '.join(ENHANCERS)}; got '{self.enhancer}'."
            )
        if self.upscale not in (1, 2, 3, 4):
            raise ValueError(f"upscale must be 1, 2, 3 or 4; got {self.upscale}.")
        if self.detector != "auto" and self.detector not in DETECTORS:
            raise ValueError(
                f"detector must be auto or one of {', '.join(DETECTORS)}; got '{self.detector}'."
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}.")


def estimate_memory(batch_size: int) -> int:
    """Bytes of device memory enhancing needs: restorer + detector, then per 512 px face."""
    return (1 << 30) + batch_size * (300 << 20)


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """iBUG-68 landmarks -> (5, 2): eye centres, nose tip, mouth corners, in template order
    (the first eye and mouth corner are the ones on the image's left)."""
    lm = np.asarray(landmarks68, dtype=np.float32)
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


def _pixel_grid(
    matrix: np.ndarray,
    out_hw: tuple[int, int],
    src_hw: tuple[int, int],
    device: torch.device,
    offset: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
) -> torch.Tensor:
    """``grid_sample`` grid (1, H, W, 2) on ``device`` sampling a ``src_hw`` image at
    ``matrix @ p`` for every output pixel p = (x, y) (pixel centres at integers); ``p`` is first
    mapped by ``(p + offset + 0.5) / scale - 0.5`` (output pixels of an enlarged frame -> frame
    pixels). The three maps are folded into one affine map (float64), evaluated on the device."""
    m = np.asarray(matrix, np.float64)
    c = (np.asarray(offset, np.float64) + 0.5) / scale - 0.5  # frame pixel of output pixel 0
    sh, sw = src_hw
    norm = np.array([2.0 / sw, 2.0 / sh])  # source pixels -> [-1, 1] (align_corners=False)
    lin = norm[:, None] * m[:, :2] / scale  # (2, 2): d(normalised) / d(output pixel)
    off = norm * (m[:, :2] @ c + m[:, 2]) + np.array([1.0 / sw - 1, 1.0 / sh - 1])
    h, w = out_hw
    a = torch.from_numpy(np.concatenate([lin, off[:, None]], 1).astype(np.float32)).to(device)
    xs = torch.arange(w, dtype=torch.float32, device=device).view(1, w, 1)
    ys = torch.arange(h, dtype=torch.float32, device=device).view(h, 1, 1)
    return (xs * a[:, 0] + ys * a[:, 1] + a[:, 2])[None]  # (1, H, W, 2)


def _template_mask() -> torch.Tensor:
    """(1, 1, 512, 512) soft mask: 0 at the crop border, 1 inside, smooth ramp in between."""
    c = torch.arange(FACE_SIZE, dtype=torch.float32)
    edge = torch.minimum(c, FACE_SIZE - 1 - c)  # distance to the nearest border, per axis
    d = torch.minimum(edge[:, None], edge[None, :])
    t = ((d - MASK_INSET) / MASK_RAMP).clamp(0, 1)
    return (t * t * (3 - 2 * t))[None, None]  # smoothstep


class FaceEnhancer:
    """A restorer network + a face finder; enhances batches of frames.

    Args:
        checkpoint_dirs: folders searched for the restorer file (see ``default_checkpoint_dirs``).
        device: where the networks run.
        config: which restorer, upscale, detector.

    Raises:
        ModelNotFoundError: the restorer file is missing (the message says where to get it).
        UnsupportedCheckpointError: the file holds another network or is damaged.
        MissingDependencyError: spandrel is not installed.
    """

    def __init__(
        self,
        checkpoint_dirs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        device: str | torch.device = "cpu",
        config: EnhanceConfig | None = None,
    ):
        self.config = cfg = config or EnhanceConfig()
        self.device = torch.device(device)
        self.dirs = default_checkpoint_dirs(checkpoint_dirs)
        file_name, self.arch = ENHANCERS[cfg.enhancer]
        self.path = require_file(file_name, self.dirs)
        self.model = load_restorer(self.path, self.arch, self.device)
        self.detector = get_detector(cfg.detector, self.dirs, self.device)
        self._mask = _template_mask().to(self.device)

    @torch.inference_mode()
    def restore(self, faces: torch.Tensor) -> torch.Tensor:
        """(N, 3, 512, 512) aligned faces in [0, 1] -> restored faces in [0, 1], in batches."""
        outs = []
        for chunk in faces.split(self.config.batch_size):
            x = chunk.to(self.device, torch.float32) * 2 - 1
            if self.arch == "GFPGAN":
                y = self.model(x, return_rgb=False, randomize_noise=False)[0]
            else:
                y = self.model(x)[0]
            outs.append(((y.float() + 1) / 2).clamp_(0, 1))
        return torch.cat(outs) if outs else faces

    def face_alignments(self, frame: np.ndarray) -> list[np.ndarray]:
        """(2, 3) frame -> template transforms of every face in an (H, W, 3) uint8 RGB frame."""
        mats = []
        for face in detect_faces(frame, self.detector):
            pts = five_points(face.landmarks)
            if np.linalg.norm(pts[1] - pts[0]) < self.config.min_eye_distance:
                continue
            m = alignment(pts)
            if m is not None:
                mats.append(m)
        return mats

    @torch.inference_mode()
    def enhance(self, frames: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 RGB frames -> (B, H*upscale, W*upscale, 3) uint8, faces restored.

        Frames without a face are only resized.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be (B, H, W, 3) uint8; got {frames.shape} {frames.dtype}."
            )
        up = self.config.upscale
        b, h, w = frames.shape[:3]
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255)  # (B, H, W, 3) -> (B, 3, H, W)

        # 1. faces of every frame, aligned onto the template
        found = [(i, m) for i in range(b) for m in self.face_alignments(frames[i])]
        if found:
            grids = torch.cat(
                [
                    _pixel_grid(
                        cv2.invertAffineTransform(m), (FACE_SIZE, FACE_SIZE), (h, w), self.device
                    )
                    for _, m in found
                ]
            )  # template pixels -> frame pixels
            src = x[[i for i, _ in found]]
            fill = torch.tensor(FILL_RGB, device=self.device).view(1, 3, 1, 1)
            crops = (
                F.grid_sample(
                    src - fill,
                    grids,
                    mode="bilinear",
                    padding_mode="zeros",
                    align_corners=False,
                )
                + fill
            )
            restored = self.restore(crops)

        # 2. the enlarged frames, then each restored face blended back in
        out = x
        if up > 1:
            out = F.interpolate(
                x, scale_factor=up, mode="bicubic", align_corners=False, antialias=False
            ).clamp_(0, 1)
        out = out.contiguous()
        for k, (i, m) in enumerate(found):
            self._paste(out[i], restored[k], m, up)
        return to_uint8(out)

    def _paste(self, frame: torch.Tensor, face: torch.Tensor, matrix: np.ndarray, up: int) -> None:
        """Blend one restored face into one enlarged (3, H', W') frame, in place, only inside the
        bounding box of the face's footprint."""
        hh, ww = frame.shape[1:]
        inv = cv2.invertAffineTransform(matrix)  # template -> frame pixels
        corners = np.array(
            [[0, 0], [FACE_SIZE, 0], [0, FACE_SIZE], [FACE_SIZE, FACE_SIZE]], np.float64
        )
        pts = (corners - 0.5) @ inv[:, :2].T + inv[:, 2]  # frame pixels
        pts = (pts + 0.5) * up - 0.5  # enlarged-frame pixels
        x0, y0 = (max(0, int(math.floor(v)) - 1) for v in pts.min(0))
        x1, y1 = (int(math.ceil(v)) + 2 for v in pts.max(0))
        x1, y1 = min(ww, x1), min(hh, y1)
        if x1 <= x0 or y1 <= y0:
            return
        grid = _pixel_grid(
            matrix, (y1 - y0, x1 - x0), (FACE_SIZE, FACE_SIZE), self.device, (x0, y0), up
        )
        sampled = F.grid_sample(
            torch.cat([face[None], self._mask], 1),
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )[0]
        region = frame[:, y0:y1, x0:x1]
        alpha = sampled[3:4]
        region.mul_(1 - alpha).add_(sampled[:3] * alpha)


_restorers: dict[tuple, torch.nn.Module] = {}


def load_restorer(
    path: str | os.PathLike, arch: str, device: str | torch.device
) -> torch.nn.Module:
    """The restorer network of ``path`` (GFPGAN v1.x clean or RestoreFormer) in eval mode on
    ``device``, built by spandrel from a safely read state dict; cached per (file, device).

    Raises:
        MissingDependencyError: spandrel is not installed.
        UnsupportedCheckpointError: the file is not the ``arch`` network.
    """
    path = Path(path)
    key = (*file_key(path), str(torch.device(device)))
    hit = _restorers.get(key)
    if hit is not None:
        return hit
    try:
        from spandrel import ModelLoader
    except ImportError as e:
        raise MissingDependencyError(
            "spandrel", "The face enhancer (GFPGAN / RestoreFormer)"
        ) from e
    spec = FILES.get(path.name)
    hint = f" {spec.download_hint}." if spec else ""
    sd = read_state_dict(path)
    try:
        descriptor = ModelLoader(torch.device(device)).load_from_state_dict(sd)
    except Exception as e:  # spandrel raises several types for unknown/mismatched state dicts
        raise UnsupportedCheckpointError(
            f"{path} is not a {arch} checkpoint spandrel can load ({str(e).splitlines()[0]}).{hint}"
        ) from e
    if descriptor.architecture.id != arch:
        raise UnsupportedCheckpointError(
            f"{path} holds a {descriptor.architecture.name} network, not {arch}.{hint}"
        )
    model = descriptor.model.eval().requires_grad_(False)
    _restorers[key] = model
    log.info("loaded %s from %s on %s", arch, path.name, device)
    return model
