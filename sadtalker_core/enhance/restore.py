"""Enhance stage: GFPGAN v1.4 / RestoreFormer face restoration of rendered frames.

What the official ``--enhancer`` does, on the device and in batches: every face of a frame is
located (landmarks the caller already knows, else a detector: eye centres, nose tip, mouth
corners), warped by a similarity transform onto the 512 px FFHQ-aligned template the restorers
were trained on, restored, and blended back into the frame enlarged ``upscale`` times through
the face-parsing mask (``parsing.py``, when ``parsing_parsenet.pth`` is present). The enlarged
frame is the background upscaler's output (``upscale.py``: Real-ESRGAN or any spandrel upscaler,
tiled) or, without one, an antialias-free bicubic enlargement.

Differences from the official (GFPGANer): the networks run on batches of faces; the StyleGAN noise
of GFPGAN is the checkpoint's fixed noise instead of fresh noise per frame (no texture flicker
from frame to frame, same result for the same input); the parsing mask is computed from the
float restored face (officially its uint8 rounding); without ``parsing_parsenet.pth`` the mask
is a soft-edged square in template space; the plain background is bicubic instead of Lanczos.

The architectures come from spandrel (ComfyUI ships it; ``pip install spandrel`` elsewhere),
loaded from the official ``GFPGANv1.4.pth`` / ``RestoreFormer.pth`` read safely by our own
checkpoint layer.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..config import ENHANCER_NAMES, EnhanceConfig
from ..devices import reused_cpu_memory
from ..errors import UnsupportedCheckpointError
from ..face.detect import detect_faces, get_detector
from ..io.frames import to_uint8
from ..models import (
    MODELS,
    default_checkpoint_dirs,
    file_key,
    find_file,
    require_file,
)
from ..progress import Progress, ShouldCancel, batch_done, check_cancel
from .landmarks import FACE_TEMPLATE, FrameLandmarks, alignment, five_points, points_per_frame
from .parsing import PARSENET_FILE, load_parsenet, parse_masks
from .spandrel_io import download_hint, load_descriptor
from .upscale import BackgroundUpscaler

__all__ = [
    "ENHANCERS",
    "FACE_SIZE",
    "FACE_TEMPLATE",
    "EnhanceConfig",
    "FaceEnhancer",
    "alignment",
    "estimate_memory",
    "five_points",
    "load_restorer",
]

log = logging.getLogger(__name__)

# enhancer name (the official --enhancer values) -> (checkpoint file, spandrel architecture id)
ENHANCERS: dict[str, tuple[str, str]] = {
    "gfpgan": ("GFPGANv1.4.pth", "GFPGAN"),
    "RestoreFormer": ("RestoreFormer.pth", "RestoreFormer"),
}
assert tuple(ENHANCERS) == ENHANCER_NAMES
FACE_SIZE = 512  # both restorers work on 512x512 aligned faces
FILL_RGB = (132 / 255, 133 / 255, 135 / 255)  # crop area outside the frame (the official's grey)
# Soft paste mask in template pixels when there is no parsing network: 1 from MASK_INSET +
# MASK_RAMP inwards, 0 within MASK_INSET of the crop border (about what the official's square
# mask gives after its erosion + Gaussian blur on a 512 face).
MASK_INSET, MASK_RAMP = 28.0, 40.0
_square_notice = [False]  # the "no parsing network" notice is logged once per process


def estimate_memory(batch_size: int) -> int:
    """Bytes of device memory enhancing needs: restorer + parser + detector, then per 512 px
    face (the background upscaler's tiles are small next to this)."""
    return (1 << 30) + batch_size * (400 << 20)


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
    """A restorer network, the paste mask (face parsing or a soft square), the background
    enlargement and, for frames without known landmarks, a face finder.

    Args:
        checkpoint_dirs: folders searched for the restorer, ``parsing_parsenet.pth`` and the
            background file (see ``default_checkpoint_dirs``).
        device: where the networks run.
        config: which restorer, upscale, detector, background.
        background: an already loaded background upscaler (a ``BackgroundUpscaler`` or a spandrel
            ``ImageModelDescriptor``, e.g. ComfyUI's UPSCALE_MODEL); overrides
            ``config.background``.

    Raises:
        ModelNotFoundError: the restorer or the background file is missing (the message says
            where to get it).
        UnsupportedCheckpointError: a file holds another network or is damaged.
        MissingDependencyError: spandrel is not installed.
    """

    def __init__(
        self,
        checkpoint_dirs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        device: str | torch.device = "cpu",
        config: EnhanceConfig | None = None,
        background: BackgroundUpscaler | Any | None = None,
    ):
        self.config = cfg = config or EnhanceConfig()
        self.device = torch.device(device)
        self.dirs = default_checkpoint_dirs(checkpoint_dirs)
        file_name, self.arch = ENHANCERS[cfg.enhancer]
        self.path = require_file(file_name, self.dirs)
        self._model = _restorer_ref(self.path, self.arch, self.device)
        self._detector = None  # created on first use: callers that pass landmarks never need it
        parse_path = find_file(PARSENET_FILE, self.dirs)
        self._parsenet = (
            MODELS.ref(
                ("parsenet", file_key(parse_path), str(self.device)),
                lambda: load_parsenet(parse_path, self.device),
                self.device,
                name=f"face parsing ({parse_path.name})",
                path=parse_path,
            )
            if parse_path
            else None
        )
        if self._parsenet is None and not _square_notice[0]:
            _square_notice[0] = True
            log.info(
                "%s not found: restored faces are pasted back with a soft square mask instead "
                "of the official face-parsing mask (put the file next to %s to use it).",
                PARSENET_FILE,
                file_name,
            )
        self._mask = _template_mask().to(self.device)
        if background is not None and not isinstance(background, BackgroundUpscaler):
            background = BackgroundUpscaler(  # moved to the enhancer's device
                background, self.device, cfg.background_tile, cfg.background_tile_pad
            )
        self._background = background
        if background is None and cfg.background is not None:
            name, dirs, dev = cfg.background, self.dirs, self.device
            tile, pad = cfg.background_tile, cfg.background_tile_pad
            self._background = MODELS.ref(
                ("upscaler", str(name), tuple(map(str, dirs)), str(dev), tile, pad),
                lambda: BackgroundUpscaler.from_name(name, dirs, dev, tile, pad),
                dev,
                name=f"background upscaler ({name})",
            )

    @property
    def model(self) -> torch.nn.Module:
        """The restorer network (through the model cache: follows a host's offload/evict)."""
        return self._model()

    @property
    def parsenet(self) -> torch.nn.Module | None:
        """The face-parsing network, or None when its file is absent."""
        return None if self._parsenet is None else self._parsenet()

    @property
    def background(self) -> BackgroundUpscaler | None:
        """The background upscaler, or None (bicubic enlargement)."""
        bg = self._background
        return bg() if callable(bg) and not isinstance(bg, BackgroundUpscaler) else bg

    @property
    def detector(self):
        """The face finder for frames that arrive without landmarks (built on first use)."""
        if self._detector is None:
            self._detector = get_detector(self.config.detector, self.dirs, self.device)
        return self._detector

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

    def paste_masks(self, restored: torch.Tensor) -> torch.Tensor:
        """(N, 3, 512, 512) restored faces -> (N, 1, 512, 512) paste masks in [0, 1]: the
        face-parsing mask when the parsing network is loaded, else the soft square."""
        if self.parsenet is None:
            return self._mask.expand(restored.shape[0], -1, -1, -1)
        return parse_masks(self.parsenet, restored, self.config.batch_size)

    def _alignments(self, points: list[np.ndarray]) -> list[np.ndarray]:
        """(2, 3) frame -> template transforms of the faces given by their five points."""
        mats = []
        for pts in points:
            if np.linalg.norm(pts[1] - pts[0]) < self.config.min_eye_distance:
                continue
            m = alignment(pts)
            if m is not None:
                mats.append(m)
        return mats

    def face_alignments(self, frame: np.ndarray) -> list[np.ndarray]:
        """(2, 3) frame -> template transforms of every face detected in an (H, W, 3) uint8 RGB
        frame."""
        return self._alignments(
            [five_points(f.landmarks) for f in detect_faces(frame, self.detector)]
        )

    def enhance(self, frames: np.ndarray, landmarks: FrameLandmarks = None) -> np.ndarray:
        """(B, H, W, 3) uint8 RGB frames -> (B, H*upscale, W*upscale, 3) uint8, faces restored.

        Args:
            frames: the frames.
            landmarks: where the faces are, when the caller knows it (see ``FrameLandmarks``:
                (68, 2) or (5, 2) points per face in frame pixels); frames without an entry are
                searched with the detector.

        Frames without a face are only enlarged.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be (B, H, W, 3) uint8; got {frames.shape} {frames.dtype}."
            )
        with reused_cpu_memory(self.device):
            x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(255)  # (B, H, W, 3) -> (B, 3, H, W)
            return to_uint8(self._enhance(x, landmarks, frames))

    def iter_enhance(
        self,
        batches: Iterable[np.ndarray],
        total: int,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
        on_batch: Callable[[np.ndarray, int, int], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Frames from anywhere (not from our renderer, so faces are detected in each frame),
        batch by batch, with progress and cancel: the enhancer's frame loop for hosts.

        Args:
            batches: (b, H, W, 3) uint8 RGB batches, ``total`` frames in all; pulled one at a
                time, so a host can convert its frames lazily.
            total: the number of frames the batches hold (for ``progress``).
            progress: ``(frames_done, total)`` after each batch; it may raise to cancel.
            should_cancel: checked before each batch; True raises ``CancelledError``.
            on_batch: ``(enhanced, frames_done, total)`` after ``progress`` (live previews).

        Yields:
            (b, H*upscale, W*upscale, 3) uint8 batches, faces restored.
        """
        done = 0
        for batch in batches:
            check_cancel(should_cancel, f"Enhancing cancelled after {done} of {total} frames.")
            out = self.enhance(batch)
            done = batch_done(out, done, total, progress, on_batch)
            yield out

    def enhance_tensor(
        self, frames: torch.Tensor, landmarks: FrameLandmarks = None
    ) -> torch.Tensor:
        """Same as ``enhance`` for frames already on the device.

        Args:
            frames: (B, 3, H, W) float RGB in [0, 1], any device (moved to the enhancer's).
            landmarks: as in ``enhance``.

        Returns:
            (B, 3, H*upscale, W*upscale) float32 in [0, 1] on the enhancer's device.
        """
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (B, 3, H, W); got {tuple(frames.shape)}.")
        with reused_cpu_memory(self.device):
            return self._enhance(frames.to(self.device, torch.float32), landmarks, None)

    @torch.inference_mode()
    def _enhance(
        self, x: torch.Tensor, landmarks: FrameLandmarks, frames_u8: np.ndarray | None
    ) -> torch.Tensor:
        up = self.config.upscale
        b, _, h, w = x.shape

        # 1. faces of every frame (given, else detected), aligned onto the template
        found = []
        for i, pts in enumerate(points_per_frame(landmarks, b)):
            if pts is None:
                frame = frames_u8[i] if frames_u8 is not None else to_uint8(x[i : i + 1])[0]
                mats = self.face_alignments(frame)
            else:
                mats = self._alignments(pts)
            found += [(i, m) for m in mats]
        if found:
            grids = torch.cat(
                [
                    _pixel_grid(
                        cv2.invertAffineTransform(m), (FACE_SIZE, FACE_SIZE), (h, w), self.device
                    )
                    for _, m in found
                ]
            )  # template pixels -> frame pixels
            fill = torch.tensor(FILL_RGB, device=self.device).view(1, 3, 1, 1)
            crops = (
                F.grid_sample(
                    x[[i for i, _ in found]] - fill,
                    grids,
                    mode="bilinear",
                    padding_mode="zeros",
                    align_corners=False,
                )
                + fill
            )
            restored = self.restore(crops)
            masks = self.paste_masks(restored)

        # 2. the enlarged frames, then each restored face blended back in
        if self.background is not None:
            out = self.background(x, up).to(self.device, torch.float32)
        elif up > 1:
            out = F.interpolate(
                x, scale_factor=up, mode="bicubic", align_corners=False, antialias=False
            ).clamp_(0, 1)
        else:
            out = x.clone()
        out = out.contiguous()
        for k, (i, m) in enumerate(found):
            self._paste(out[i], restored[k], masks[k], m, up)
        return out

    def _paste(
        self,
        frame: torch.Tensor,
        face: torch.Tensor,
        mask: torch.Tensor,
        matrix: np.ndarray,
        up: int,
    ) -> None:
        """Blend one restored (3, 512, 512) face through its (1, 512, 512) mask into one enlarged
        (3, H', W') frame, in place, only inside the bounding box of the face's footprint."""
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
        # The face is warped bilinearly and the parsing mask bicubically, as officially
        # (cv2.warpAffine default / flags=3; both Keys a=-0.75, zeros outside); the soft square
        # goes with the face.
        bicubic_mask = self.parsenet is not None
        src = face[None] if bicubic_mask else torch.cat([face, mask.to(face)])[None]
        sampled = F.grid_sample(
            src, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )[0]
        if bicubic_mask:
            alpha = F.grid_sample(
                mask.to(face)[None], grid, mode="bicubic", padding_mode="zeros", align_corners=False
            )[0]
        else:
            alpha = sampled[3:4]
        region = frame[:, y0:y1, x0:x1]
        region.mul_(1 - alpha).add_(sampled[:3] * alpha)


def _restorer_ref(path: Path, arch: str, device: torch.device):
    return MODELS.ref(
        ("restorer", arch, file_key(path), str(device)),
        lambda: _build_restorer(path, arch, device),
        device,
        name=f"{arch} ({path.name})",
        path=path,
    )


def load_restorer(
    path: str | os.PathLike, arch: str, device: str | torch.device
) -> torch.nn.Module:
    """The restorer network of ``path`` (GFPGAN v1.x clean or RestoreFormer) in eval mode on
    ``device``, built by spandrel from a safely read state dict; cached in ``MODELS`` per
    (file, device).

    Raises:
        MissingDependencyError: spandrel is not installed.
        UnsupportedCheckpointError: the file is not the ``arch`` network.
    """
    return _restorer_ref(Path(path), arch, torch.device(device))()


def _build_restorer(path: Path, arch: str, device: torch.device) -> torch.nn.Module:
    descriptor = load_descriptor(path, device, "The face enhancer (GFPGAN / RestoreFormer)")
    if descriptor.architecture.id != arch:
        raise UnsupportedCheckpointError(
            f"{path} holds a {descriptor.architecture.name} network, not {arch}."
            f"{download_hint(path)}"
        )
    model = descriptor.model.eval().requires_grad_(False)
    log.info("loaded %s from %s on %s", arch, path.name, device)
    return model
