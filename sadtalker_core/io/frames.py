"""Generic frame helpers shared by the stages and hosts: float <-> uint8, resizing, even sizes.

Float frames are (B, 3, H, W) float32 in [0, 1] on any device; uint8 frames are (B, H, W, 3)
RGB numpy arrays (or tensors), the layout of video files and of hosts' images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_uint8(batch: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] on any device -> (B, H, W, 3) uint8 numpy (round half to even)."""
    u8 = batch.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return u8.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def to_float(frames: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 tensor -> (B, 3, H, W) float32 in [0, 1], on the same device."""
    return frames.permute(0, 3, 1, 2).float().div_(255.0)


def resize_frames(batch: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, 3, H, W) frames to ``hw`` (antialiased when shrinking)."""
    if tuple(batch.shape[-2:]) == tuple(hw):
        return batch
    shrink = hw[0] < batch.shape[-2] or hw[1] < batch.shape[-1]
    return F.interpolate(batch, size=hw, mode="bilinear", align_corners=False, antialias=shrink)


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """(B, H, W, C) frames with the last row / column repeated where H or W is odd (H.264
    yuv420p needs even sizes); unchanged (not copied) when both are even."""
    h, w = frames.shape[1:3]
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
