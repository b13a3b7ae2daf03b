"""Background upscaling of whole frames with any spandrel image-to-image model (the official
``--background_enhancer realesrgan``: Real-ESRGAN x2plus), tiled so any frame size fits.

Tile rule of the official RealESRGANer (tile 400, tile_pad 10, pre_pad 0): the frame is mirrored
at its right and bottom edges to a multiple of 2 (x2 models) or 4 (x1 models); it is cut into
``tile`` x ``tile`` squares, each run with ``tile_pad`` pixels of context on every side (clamped
to the frame), and only each square's own part of the output is kept. The network's output is
then resized to the requested scale when it differs from the network's own. Unlike the official,
this runs on CPU too, on batches of frames, and keeps every value in float (no uint8 rounding).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..config import BACKGROUND_TILE, BACKGROUND_TILE_PAD
from ..errors import ModelNotFoundError, UnsupportedCheckpointError
from ..models import FILES, find_file
from .spandrel_io import download_hint, load_descriptor

log = logging.getLogger(__name__)

REALESRGAN_FILE = "RealESRGAN_x2plus.pth"
BACKGROUNDS = {"realesrgan": REALESRGAN_FILE}  # official --background_enhancer names -> file
TILE, TILE_PAD = BACKGROUND_TILE, BACKGROUND_TILE_PAD


def load_upscaler(path: str | os.PathLike, device: str | torch.device = "cpu") -> Any:
    """An upscaler file (``RealESRGAN_x2plus.pth`` or any spandrel-supported one, read with
    ``weights_only``) -> spandrel ``ImageModelDescriptor`` in eval mode on ``device`` (fp32).

    Raises:
        MissingDependencyError: spandrel is not installed.
        UnsupportedCheckpointError: spandrel does not know the network, or it is not an
            RGB image-to-image model.
    """
    path = Path(path)
    desc = load_descriptor(path, device, "The background upscaler")
    from spandrel import ImageModelDescriptor

    hint = download_hint(path)
    if not isinstance(desc, ImageModelDescriptor) or (
        desc.input_channels,
        desc.output_channels,
    ) != (
        3,
        3,
    ):
        raise UnsupportedCheckpointError(
            f"{path} holds a {desc.architecture.name} network, not an RGB image upscaler.{hint}"
        )
    if desc.purpose == "FaceSR":
        raise UnsupportedCheckpointError(
            f"{path} holds {desc.architecture.name}, a face restoration network; the background "
            "needs a whole-image upscaler (e.g. RealESRGAN_x2plus.pth)."
        )
    log.info(
        "loaded %s x%d upscaler from %s on %s",
        desc.architecture.name,
        desc.scale,
        path.name,
        device,
    )
    return desc.eval()


def resolve_background(name: str, dirs: Sequence[Path]) -> Path:
    """``"realesrgan"`` -> ``RealESRGAN_x2plus.pth`` in the checkpoint folders; anything else is
    a file path, or a file name looked up in the checkpoint folders.

    Raises:
        ModelNotFoundError: no such file (the message says where to get the official one).
    """
    file_name = BACKGROUNDS.get(name.lower(), name)
    direct = Path(file_name).expanduser()
    if direct.is_file():
        return direct
    found = find_file(direct.name, dirs)
    if found is not None:
        return found
    spec = FILES.get(direct.name)
    where = dirs[0] if dirs else Path("models/sadtalker")
    hint = (
        f"{spec.download_hint} and put it in {where}."
        if spec
        else f"Give an existing upscaler file (any model spandrel loads) or one of: "
        f"{', '.join(BACKGROUNDS)}."
    )
    raise ModelNotFoundError(
        file_name, [direct.parent, *dirs] if direct.parent != Path() else list(dirs), hint
    )


class BackgroundUpscaler:
    """Upscales whole frames with a spandrel image model, tile by tile, on the model's device.

    Args:
        model: a spandrel ``ImageModelDescriptor`` (ComfyUI's UPSCALE_MODEL is one).
        device: move the model there (None: leave it where it is).
        tile: tile side in input pixels (0: the whole frame in one call).
        tile_pad: context pixels around each tile.
        frames_per_call: frames run together per tile (halved on out-of-memory).
    """

    def __init__(
        self,
        model: Any,
        device: str | torch.device | None = None,
        tile: int = TILE,
        tile_pad: int = TILE_PAD,
        frames_per_call: int = 4,
    ):
        for attr in ("scale", "model", "size_requirements"):
            if not hasattr(model, attr):
                raise TypeError(
                    f"the background upscaler must be a spandrel ImageModelDescriptor; got "
                    f"{type(model).__name__}."
                )
        self.model = model if device is None else model.to(torch.device(device))
        self.scale = int(model.scale)
        self.tile, self.tile_pad = int(tile), int(tile_pad)
        self.frames_per_call = max(1, int(frames_per_call))
        official_mod = {1: 4, 2: 2}.get(self.scale, 1)  # RealESRGANer's mod_scale
        self.multiple = math.lcm(official_mod, int(model.size_requirements.multiple_of))

    @classmethod
    def from_name(
        cls,
        name: str,
        dirs: Sequence[Path],
        device: str | torch.device = "cpu",
        tile: int = TILE,
        tile_pad: int = TILE_PAD,
    ) -> BackgroundUpscaler:
        """``"realesrgan"`` or an upscaler file path -> loaded upscaler; fp16 on CUDA when the
        network supports it (as the official ``half=True``)."""
        desc = load_upscaler(resolve_background(name, dirs), device)
        if torch.device(device).type == "cuda" and desc.supports_half:
            desc = desc.half()
        return cls(desc, None, tile, tile_pad)

    def nn_modules(self) -> list[torch.nn.Module]:
        return [self.model.model]

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor, outscale: float | None = None) -> torch.Tensor:
        """(B, 3, H, W) float RGB in [0, 1] -> (B, 3, int(H * outscale), int(W * outscale))
        float32 in [0, 1] on the frames' device (``outscale`` None: the network's scale).

        The network's output is resized (bicubic, antialiased when shrinking) when ``outscale``
        differs from its scale.
        """
        b, _, h, w = frames.shape
        y = self._network_scale(frames)  # (B, 3, H * s, W * s)
        if outscale is not None and outscale != self.scale:
            size = (int(h * outscale), int(w * outscale))
            y = F.interpolate(
                y, size=size, mode="bicubic", align_corners=False, antialias=outscale < self.scale
            ).clamp_(0, 1)
        return y.to(frames.device)

    def _network_scale(self, frames: torch.Tensor) -> torch.Tensor:
        dev, dtype = self.model.device, self.model.dtype
        s, mod = self.scale, self.multiple
        b, _, h, w = frames.shape
        ph, pw = (-h) % mod, (-w) % mod
        x = frames.to(dev, dtype)
        if ph or pw:  # mirror at the right / bottom edges (replicate where the frame is too small)
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        out = torch.empty((b, 3, x.shape[2] * s, x.shape[3] * s), dtype=torch.float32, device=dev)
        chunk, tile = self.frames_per_call, self.tile
        start = 0
        while start < b:
            stop = min(b, start + chunk)
            try:
                self._tiles(x[start:stop], out[start:stop], tile)
            except torch.OutOfMemoryError:
                if chunk == 1 and (tile == 0 or tile <= 4 * mod):
                    raise
                if chunk > 1:
                    chunk //= 2
                else:
                    tile = (tile or max(x.shape[2:])) // 2
                log.warning(
                    "background upscaler out of memory; retrying with %d frames of %d px tiles",
                    chunk,
                    tile,
                )
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            start = stop
        return out[:, :, : h * s, : w * s]

    def _tiles(self, x: torch.Tensor, out: torch.Tensor, tile: int) -> None:
        """Run the network over ``x`` (n, 3, H, W) tile by tile into ``out`` (n, 3, H*s, W*s)."""
        s, mod = self.scale, self.multiple
        hh, ww = x.shape[2:]
        if tile <= 0 or (hh <= tile and ww <= tile):
            out.copy_(self.model(x))
            return
        t = max(mod, tile // mod * mod)  # tile and context stay on the mod grid
        p = -(-self.tile_pad // mod) * mod
        for y0 in range(0, hh, t):
            for x0 in range(0, ww, t):
                y1, x1 = min(y0 + t, hh), min(x0 + t, ww)
                py0, px0 = max(y0 - p, 0), max(x0 - p, 0)
                py1, px1 = min(y1 + p, hh), min(x1 + p, ww)
                y = self.model(x[:, :, py0:py1, px0:px1])  # (n, 3, (py1-py0)*s, (px1-px0)*s)
                out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = y[
                    :, :, (y0 - py0) * s : (y1 - py0) * s, (x0 - px0) * s : (x1 - px0) * s
                ]
