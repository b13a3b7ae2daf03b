"""Head-motion maths of the SadTalker renderer: angle bins -> degrees -> rotation -> keypoints."""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple, Union

import torch
import torch.nn.functional as F

from ..errors import ShapeError

log = logging.getLogger(__name__)

NUM_ANGLE_BINS = 66  # yaw/pitch/roll classification bins of MappingNet
DEGREES_PER_BIN = 3.0  # bin width in degrees
DEGREES_OFFSET = 99.0  # bin 0 is centred on -99 degrees
PI_APPROX = 3.14  # the official renderer converts degrees with 3.14, not math.pi (kept for parity)

AngleOverride = Union[torch.Tensor, float, None]


class HeadMotion(NamedTuple):
    """Raw MappingNet outputs for a batch of coefficient windows.

    Attributes:
        yaw: (B, 66) logits over the yaw angle bins.
        pitch: (B, 66) logits over the pitch angle bins.
        roll: (B, 66) logits over the roll angle bins.
        t: (B, 3) head translation (x, y, z); only y is used by :func:`transform_keypoints`.
        exp: (B, 45) expression offsets of the 15 keypoints, (x, y, z) per keypoint.
    """

    yaw: torch.Tensor
    pitch: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor


@functools.lru_cache(maxsize=32)
def _cached_grid(
    depth: int, height: int, width: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    # Created outside inference mode so the cached constant is usable under autograd as well.
    with torch.inference_mode(False), torch.no_grad():

        def ramp(n: int) -> torch.Tensor:
            # Same float ops as the reference: 2 * (i / (n - 1)) - 1.
            return 2 * (torch.arange(n, device=device).to(dtype) / (n - 1)) - 1

        x = ramp(width).view(1, 1, width).expand(depth, height, width)
        y = ramp(height).view(1, height, 1).expand(depth, height, width)
        z = ramp(depth).view(depth, 1, 1).expand(depth, height, width)
        return torch.stack([x, y, z], dim=-1)  # (D, H, W, 3)


def coordinate_grid(
    depth: int, height: int, width: int, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """Normalised 3-D sampling grid, built once per size/dtype/device and cached.

    Args:
        depth, height, width: volume size.
        dtype, device: of the returned tensor.

    Returns:
        (D, H, W, 3) tensor; ``[..., 0]`` = x ramp over width, ``[..., 1]`` = y over height,
        ``[..., 2]`` = z over depth, each evenly spaced from -1 to 1. Shared: never modify it.

    Convention:
        Matches ``grid_sample`` with ``align_corners=False`` only at the volume corners' centres;
        the official renderer uses these ramps as keypoint coordinates and sampling grids alike.
    """
    return _cached_grid(depth, height, width, dtype, torch.device(device))


def logits_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Expected angle of a 66-bin classification: softmax expectation · 3 − 99.

    Args:
        logits: (B, 66) raw scores.

    Returns:
        (B,) angles in degrees, within [-99, 96].
    """
    if logits.dim() != 2 or logits.shape[1] != NUM_ANGLE_BINS:
        raise ShapeError(f"Angle logits must be (B, {NUM_ANGLE_BINS}); got {tuple(logits.shape)}.")
    prob = F.softmax(logits, dim=1)
    bins = torch.arange(NUM_ANGLE_BINS, device=logits.device).to(logits.dtype)
    return torch.sum(prob * bins, 1) * DEGREES_PER_BIN - DEGREES_OFFSET


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Head rotation R = P · Y · Rr from Euler angles in degrees.

    Args:
        yaw, pitch, roll: (B,) angles in degrees (converted with 3.14, not pi, as upstream does).

    Returns:
        (B, 3, 3) rotation matrices.

    Convention:
        P rotates about x (pitch), Y about y (yaw), Rr about z (roll); keypoints are column
        vectors, ``kp' = R @ kp``.
    """
    yaw = yaw / 180 * PI_APPROX
    pitch = pitch / 180 * PI_APPROX
    roll = roll / 180 * PI_APPROX
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)

    def mat(*rows: torch.Tensor) -> torch.Tensor:
        return torch.stack(rows, dim=1).view(-1, 3, 3)  # (B, 9) -> (B, 3, 3)

    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cr, sr = torch.cos(roll), torch.sin(roll)
    pitch_mat = mat(one, zero, zero, zero, cp, -sp, zero, sp, cp)
    yaw_mat = mat(cy, zero, sy, zero, one, zero, -sy, zero, cy)
    roll_mat = mat(cr, -sr, zero, sr, cr, zero, zero, zero, one)
    return torch.einsum("bij,bjk,bkm->bim", pitch_mat, yaw_mat, roll_mat)


def head_pose_degrees(motion: HeadMotion) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(yaw, pitch, roll) in degrees, each (B,), from the logits of a :class:`HeadMotion`."""
    return (
        logits_to_degrees(motion.yaw),
        logits_to_degrees(motion.pitch),
        logits_to_degrees(motion.roll),
    )


def _override(predicted: torch.Tensor, user: AngleOverride) -> torch.Tensor:
    if user is None:
        return predicted
    value = torch.as_tensor(user, dtype=predicted.dtype, device=predicted.device)
    return value.reshape(-1).expand_as(predicted) if value.numel() == 1 else value.reshape(-1)


def transform_keypoints(
    kp_canonical: torch.Tensor,
    motion: HeadMotion,
    yaw_deg: AngleOverride = None,
    pitch_deg: AngleOverride = None,
    roll_deg: AngleOverride = None,
) -> torch.Tensor:
    """Pose and deform canonical keypoints: ``kp = R · kp_c + (0, t_y, 0) + exp``.

    Args:
        kp_canonical: (B or 1, K, 3) canonical keypoints from :class:`KPDetector`, in [-1, 1].
        motion: MappingNet outputs for B windows. Not modified (upstream zeroes ``t``'s x and
            z in place; here a masked copy is used).
        yaw_deg, pitch_deg, roll_deg: optional user angles in degrees replacing the predicted
            ones: a scalar or a (B,) tensor.

    Returns:
        (B, K, 3) transformed keypoints. A batch-1 ``kp_canonical`` is broadcast over B.
    """
    if kp_canonical.dim() != 3 or kp_canonical.shape[-1] != 3:
        raise ShapeError(f"kp_canonical must be (B, K, 3); got {tuple(kp_canonical.shape)}.")
    yaw, pitch, roll = head_pose_degrees(motion)
    rot = rotation_matrix(
        _override(yaw, yaw_deg), _override(pitch, pitch_deg), _override(roll, roll_deg)
    )  # (B, 3, 3)
    kp_rotated = torch.matmul(kp_canonical, rot.transpose(1, 2))  # (B, K, 3) row vectors · Rᵀ
    keep_y = motion.t.new_tensor([0.0, 1.0, 0.0])
    t = (motion.t * keep_y).unsqueeze(1)  # (B, 3) -> (B, 1, 3); t_x = t_z = 0
    exp = motion.exp.view(motion.exp.shape[0], -1, 3)  # (B, 3K) -> (B, K, 3)
    return kp_rotated + t + exp
