"""Paste rendered face frames back into the full-resolution source picture (full / extfull modes)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from .errors import SadTalkerError
from .io.frames import resize_frames, to_float, to_uint8
from .options import option_of
from .types import Face

log = logging.getLogger(__name__)


def paste_box(face: Face) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) integer box of the face crop in the original picture, clamped to it."""
    if face.crop_info is None:
        h, w = face.image.shape[:2]
        return 0, 0, w, h
    x0, y0, x1, y1 = face.crop_info.image_box_original
    h, w = face.image.shape[:2]
    box = (max(0, round(x0)), max(0, round(y0)), min(w, round(x1)), min(h, round(y1)))
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        raise SadTalkerError(f"The face box {box} of the crop is empty; re-run the extract stage.")
    return box


def feather_mask(height: int, width: int, feather: float, device: torch.device) -> torch.Tensor:
    """(1, 1, h, w) blend weight: 1 inside, smoothly falling to 0 over a border of
    ``feather * min(h, w)`` pixels (at least 2) along every edge."""
    border = max(2.0, feather * min(height, width))

    def ramp(n: int) -> torch.Tensor:
        i = torch.arange(n, device=device, dtype=torch.float32)
        d = torch.minimum(i + 0.5, n - i - 0.5) / border  # distance to the nearest edge, in borders
        t = d.clamp(0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)  # smoothstep

    return (ramp(height)[:, None] * ramp(width)[None, :])[None, None]


class PasteBack:
    """Composites face frames into the source picture, on the frames' device.

    Args:
        face: the extract-stage result (source picture and crop box).
        device: where the compositing runs (use the render device to avoid copies).
        blend: ``"feather"`` (fast, on device) or ``"poisson"`` (``cv2.seamlessClone``, as the
            official code; CPU, slow).
        feather: width of the soft border as a fraction of the box's smaller side.

    Convention:
        Input batches are (B, 3, S, S) float in [0, 1]; output is (B, H, W, 3) uint8 RGB numpy at
        the source's full resolution. The source's alpha channel (``face.alpha``) is unchanged by
        pasting; hosts that keep transparency attach it to the frames as a mask.
    """

    def __init__(
        self,
        face: Face,
        device: str | torch.device = "cpu",
        blend: str = "feather",
        feather: float = 0.08,
    ):
        option_of("run", "blend").check(blend)
        self.face = face
        self.device = torch.device(device)
        self.blend = blend
        self.box = paste_box(face)
        x0, y0, x1, y1 = self.box
        self._bh, self._bw = y1 - y0, x1 - x0
        if blend == "feather":
            # torch.tensor copies: face.image may be a read-only array (np.load, a cache).
            img = torch.tensor(face.image, dtype=torch.uint8, device=self.device)  # (H, W, 3)
            self._full = img.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)  # (1, 3, H, W)
            self._mask = feather_mask(self._bh, self._bw, feather, self.device)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """(B, 3, S, S) face frames -> (B, H, W, 3) uint8 RGB numpy frames of the whole picture."""
        if self.blend == "poisson":
            return self._poisson(self._fit(batch))
        return to_uint8(self.tensor(batch))

    @torch.inference_mode()
    def tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) face frames -> (B, 3, H, W) float32 frames in [0, 1] of the whole
        picture, left on the device (for the enhancer); Poisson blending goes through the CPU."""
        if self.blend == "poisson":
            frames = torch.from_numpy(self._poisson(self._fit(batch))).to(self.device)
            return to_float(frames)
        x0, y0, x1, y1 = self.box
        faces = self._fit(batch)
        out = self._full.expand(faces.shape[0], -1, -1, -1).clone()  # (B, 3, H, W)
        region = out[:, :, y0:y1, x0:x1]
        region.mul_(1.0 - self._mask).add_(faces.clamp(0.0, 1.0) * self._mask)
        return out

    def _fit(self, batch: torch.Tensor) -> torch.Tensor:
        """The face frames resized to the paste box."""
        return resize_frames(batch.to(self.device, torch.float32), (self._bh, self._bw))

    def _poisson(self, faces: torch.Tensor) -> np.ndarray:
        import cv2

        x0, y0, x1, y1 = self.box
        src = to_uint8(faces)
        full_bgr = np.ascontiguousarray(self.face.image[..., ::-1])
        mask = np.full((self._bh, self._bw), 255, np.uint8)
        center = ((x0 + x1) // 2, (y0 + y1) // 2)
        out = np.empty((len(src), *self.face.image.shape), np.uint8)
        for i, f in enumerate(src):
            out[i] = cv2.seamlessClone(
                np.ascontiguousarray(f[..., ::-1]), full_bgr, mask, center, cv2.NORMAL_CLONE
            )[..., ::-1]
        return out
