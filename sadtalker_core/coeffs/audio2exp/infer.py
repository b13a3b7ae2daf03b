"""Expression sequence from per-frame mel windows with ExpNet (frames batched in chunks)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from ...errors import ShapeError
from .net import Audio2ExpNet

log = logging.getLogger(__name__)


def _as_tensor(
    x: torch.Tensor | np.ndarray, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    return torch.as_tensor(x).to(device=device, dtype=dtype)


def window_batch(
    mel_windows: torch.Tensor | np.ndarray, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Mel windows as the audio encoders' (T, 1, 80, 16) batch, from (T, 80, 16) or the official
    (1, T, 1, 80, 16) layout.

    Raises:
        ShapeError: any other shape.
    """
    mel = _as_tensor(mel_windows, device, dtype)
    if mel.ndim == 5 and mel.shape[0] == 1 and mel.shape[2:] == (1, 80, 16):
        return mel[0]  # (1, T, 1, 80, 16) -> (T, 1, 80, 16)
    if mel.ndim == 3 and mel.shape[1:] == (80, 16):
        return mel.unsqueeze(1)  # (T, 80, 16) -> (T, 1, 80, 16)
    raise ShapeError(
        f"mel_windows must be (T, 80, 16) or (1, T, 1, 80, 16), got {tuple(mel.shape)}."
    )


def predict_expression(
    net: Audio2ExpNet,
    mel_windows: torch.Tensor | np.ndarray,
    ref_exp: torch.Tensor | np.ndarray,
    blink_ratio: torch.Tensor | np.ndarray | None = None,
    chunk_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run ExpNet over a whole clip.

    The official loop feeds 10 frames at a time; frames are independent, so larger chunks give
    the same numbers (up to float32 summation order) and run faster.

    Args:
        net: loaded :class:`Audio2ExpNet` in eval mode; its device and dtype are used.
        mel_windows: (T, 80, 16) or (1, T, 1, 80, 16) normalised log-mel windows in [-4, 4].
        ref_exp: reference expression coefficients, (T, 64) or (1, T, 64), or (64,) for every
            frame; only the first 64 columns are read, so (T, 70) coefficient rows may be passed.
        blink_ratio: eye-blink ratio per frame in [0, 1], (T,), (T, 1) or (1, T, 1);
            ``None`` means no blinks (zeros).
        chunk_size: frames per forward pass (memory bound only).
        progress: optional ``(done_frames, total_frames)`` callback, called once per chunk.

    Returns:
        (T, 64) float tensor on the net's device.

    Raises:
        ShapeError: the inputs do not have the documented shapes or disagree on T.
    """
    param = next(net.parameters())
    device, dtype = param.device, param.dtype
    mel = window_batch(mel_windows, device, dtype)  # (T, 1, 80, 16)
    t = mel.shape[0]

    exp_dim = net.config.exp_dim
    ref = _as_tensor(ref_exp, device, dtype)[..., :exp_dim]
    if ref.ndim == 1:
        ref = ref.expand(t, exp_dim)
    if ref.numel() != t * exp_dim:
        raise ShapeError(
            f"ref_exp must hold {exp_dim} coefficients for each of the {t} frames "
            f"(or one row for all), got {tuple(ref.shape)}."
        )
    ref = ref.reshape(t, exp_dim)  # (1, T, 64) -> (T, 64)

    if blink_ratio is None:
        blink = torch.zeros(t, 1, device=device, dtype=dtype)
    else:
        blink = _as_tensor(blink_ratio, device, dtype)
        if blink.numel() != t:
            raise ShapeError(
                f"blink_ratio must hold one value per frame ({t}), got {tuple(blink.shape)}."
            )
        blink = blink.reshape(t, 1)  # (1, T, 1) -> (T, 1)

    out = torch.empty(t, exp_dim, device=device, dtype=dtype)
    with torch.no_grad():
        for s in range(0, t, chunk_size):
            e = min(s + chunk_size, t)
            out[s:e] = net(mel[s:e], ref[s:e], blink[s:e])
            if progress is not None:
                progress(e, t)
    log.debug("audio2exp: %d frames", t)
    return out
