"""Reading source images as users bring them: files, bytes, PIL images, arrays and tensors."""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import InvalidImageError

log = logging.getLogger(__name__)

# Neutral mid-grey background for transparent pixels: keeps the face detector and the
# reconstruction net away from the black/white extremes a plain drop of alpha would give.
ALPHA_BACKGROUND = (127, 127, 127)

# what PIL raises for a file that is not a picture it can read (UnidentifiedImageError is an
# OSError)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError)

ImageInput = Union[str, os.PathLike, bytes, "np.ndarray", "PIL.Image.Image", "torch.Tensor"]  # noqa: F821


@dataclass(frozen=True)
class SourceImage:
    """A decoded source picture.

    Attributes:
        rgb: (H, W, 3) uint8 RGB at full resolution; transparent pixels composited onto
            ``ALPHA_BACKGROUND``.
        alpha: (H, W) uint8 alpha channel when the input had one (kept for paste-back), else None.
        name: file name or a short description of the input, for messages.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    name: str = "image"

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.rgb.shape[1], self.rgb.shape[0]


def load_image(image: ImageInput, name: str | None = None) -> SourceImage:
    """Decode ``image`` into 8-bit RGB (+ alpha), whatever form it comes in.

    Accepted: a path (format sniffed from the content, not the extension; EXIF orientation
    applied), raw bytes, a PIL image, a numpy array or torch tensor (H, W), (H, W, 1|3|4) or
    (1|3|4, H, W) of uint8, uint16 or float in 0..1. One picture: host adapters pick it out of
    their batches.

    Raises:
        InvalidImageError: unreadable, corrupt or empty input, with the reason and the fix.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        _check_file(path)
        return _from_pil(_open_pil(path.read_bytes(), str(path)), name or path.name)
    if isinstance(image, (bytes, bytearray)):
        return _from_pil(_open_pil(bytes(image), name or "image bytes"), name or "image bytes")
    from PIL import Image

    if isinstance(image, Image.Image):
        return _from_pil(image, name or "PIL image")
    if type(image).__module__.startswith("torch"):
        return _from_array(image.detach().cpu().float().numpy(), name or "image tensor")
    if isinstance(image, np.ndarray):
        return _from_array(image, name or "array")
    raise InvalidImageError(
        f"Unsupported image input of type {type(image).__name__}: give a file path, PIL image, "
        "numpy array or tensor."
    )


def probe_image(path: Path) -> None:
    """Check that the file ``path`` holds a picture PIL can identify, from its header (the
    pixels are not decoded: a fraction of a second for any size).

    Raises:
        InvalidImageError: missing, a folder, empty, or not a picture.
    """
    from PIL import Image

    _check_file(path)
    if path.stat().st_size == 0:
        raise _empty(path)
    try:
        with Image.open(path) as img:
            img.verify()
    except _DECODE_ERRORS as e:
        raise _undecodable(path, e) from e


def _check_file(path: Path) -> None:
    if not path.is_file():
        what = "is a folder, not a picture" if path.is_dir() else "does not exist"
        raise InvalidImageError(f"Source image {path} {what}. Check the path.")


def _empty(name: object) -> InvalidImageError:
    return InvalidImageError(f"Source image {name} is empty (0 bytes).")


def _undecodable(name: object, e: Exception) -> InvalidImageError:
    return InvalidImageError(
        f"Source image {name} cannot be decoded ({type(e).__name__}: {e}). The file is corrupt "
        "or not an image; re-export it as PNG or JPEG."
    )


def _open_pil(data: bytes, name: str):
    from PIL import Image, ImageOps

    if not data:
        raise _empty(name)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except _DECODE_ERRORS as e:
        raise _undecodable(name, e) from e
    if (
        img.format
        and Path(name).suffix
        and img.format.lower() not in _suffix_formats(Path(name).suffix)
    ):
        log.info("%s is %s data despite its extension; decoded by content", name, img.format)
    return ImageOps.exif_transpose(img)


def _suffix_formats(suffix: str) -> set[str]:
    s = suffix.lower().lstrip(".")
    return {s, {"jpg": "jpeg", "tif": "tiff"}.get(s, s)}


def _from_pil(img, name: str) -> SourceImage:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        return _from_array((arr / peak).astype(np.float32), name)
    if mode == "F":
        return _from_array(np.asarray(img, dtype=np.float32), name)
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"))
        return _composite(rgba[..., :3], rgba[..., 3], name)
    return _checked(SourceImage(np.ascontiguousarray(np.asarray(img.convert("RGB"))), None, name))


def _from_array(arr: np.ndarray, name: str) -> SourceImage:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # (C, H, W) -> (H, W, C)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise InvalidImageError(
            f"{name}: expected an (H, W[, C]) image with 1-4 channels, got shape {tuple(arr.shape)}."
        )
    if arr.dtype == np.uint8:
        u8 = arr
    elif arr.dtype == np.uint16:
        u8 = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool:
        f = np.nan_to_num(arr.astype(np.float32), nan=0.0)
        if f.size and f.max() > 1.0 + 1e-3:
            log.warning(
                "%s: float image above 1.0 (max %.3g); assuming a 0..255 range", name, f.max()
            )
            f = f / 255.0
        u8 = (np.clip(f, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        u8 = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise InvalidImageError(f"{name}: unsupported pixel type {arr.dtype}.")
    c = u8.shape[-1]
    if c == 1:
        return _checked(SourceImage(np.ascontiguousarray(np.repeat(u8, 3, axis=-1)), None, name))
    if c == 2:
        return _composite(np.repeat(u8[..., :1], 3, axis=-1), u8[..., 1], name)
    if c == 4:
        return _composite(u8[..., :3], u8[..., 3], name)
    return _checked(SourceImage(np.ascontiguousarray(u8), None, name))


def _composite(rgb: np.ndarray, alpha: np.ndarray, name: str) -> SourceImage:
    if alpha.min() == 255:
        return _checked(SourceImage(np.ascontiguousarray(rgb), None, name))
    a = alpha.astype(np.float32)[..., None] / 255.0
    bg = np.asarray(ALPHA_BACKGROUND, dtype=np.float32)
    out = (rgb.astype(np.float32) * a + bg * (1.0 - a)).round().astype(np.uint8)
    return _checked(SourceImage(out, np.ascontiguousarray(alpha), name))


def _checked(img: SourceImage) -> SourceImage:
    h, w = img.rgb.shape[:2]
    if h == 0 or w == 0:
        raise InvalidImageError(f"Source image {img.name} is empty ({w}x{h}).")
    return img
