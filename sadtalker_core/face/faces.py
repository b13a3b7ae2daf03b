"""What a face detector finds, the detector protocol, and the image form detectors take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidImageError


@dataclass(frozen=True, eq=False)  # arrays inside: identity equality and hash
class DetectedFace:
    """One face found in an image.

    Convention: pixel coordinates of the image given to the detector, x right, y down, pixel
    centres at integer coordinates.

    Attributes:
        box: (4,) float32 x0, y0, x1, y1 (top-left and bottom-right corners).
        score: detector confidence in 0..1.
        landmarks: (68, 2) float32 (x, y) in iBUG-68 order (jaw 0-16, brows 17-26, nose 27-35,
            eyes 36-47, mouth 48-67).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        """Box area in square pixels (0 for a degenerate box)."""
        w = max(float(self.box[2] - self.box[0]), 0.0)
        h = max(float(self.box[3] - self.box[1]), 0.0)
        return w * h


@runtime_checkable
class FaceDetector(Protocol):
    """A face detector backend: finds every face of an RGB image, with 68 landmarks each."""

    name: str

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """All faces of ``rgb`` ((H, W, 3) uint8 RGB), in no particular order."""
        ...


def as_rgb_u8(image: np.ndarray) -> np.ndarray:
    """Check and normalise a detector input to a contiguous (H, W, 3) uint8 RGB array.

    Grayscale (H, W) / (H, W, 1) is repeated to 3 channels and RGBA loses its alpha channel.

    Raises:
        InvalidImageError: not a uint8 image, or empty.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InvalidImageError(
            f"Face detection needs a uint8 RGB image; got dtype {arr.dtype}. Convert 0..1 floats "
            "with (x * 255).round().astype(np.uint8)."
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InvalidImageError(
            f"Face detection needs an (H, W, 3) RGB image; got shape {arr.shape}."
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidImageError(f"Face detection got an empty image of shape {arr.shape}.")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)  # (H, W, 1) -> (H, W, 3)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]  # (H, W, 4) -> (H, W, 3), alpha dropped
    return np.ascontiguousarray(arr)
