"""The official random eye-blink schedule."""

from __future__ import annotations

import numpy as np

BLINK_SHAPE = (0.5, 0.9, 1.0, 0.9, 0.5)  # eye-closure ratio over the frames of one blink
BLINK_MIN_GAP = 10  # frames; the gap before each blink is uniform in [min, max)
BLINK_MAX_GAP = 70  # frames (exclusive upper bound, and at most half the clip)
BLINK_MIN_CLIP = 20  # clips of at most this many frames get no blinks (official rule)


def blink_schedule(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Random eye-blink ratio per 25 fps frame, following the official schedule.

    Starting at frame 0, repeatedly wait a gap drawn uniformly from
    ``[min(10, T), min(T // 2, 70))`` frames, then blink for 5 frames (0.5, 0.9, 1, 0.9, 0.5),
    while the blink still ends before the last frame. Clips of at most 20 frames get no blinks
    (as do 21-frame clips, whose gap range is empty; the official code fails there).

    Args:
        num_frames: T, frames at 25 fps.
        rng: numpy generator owned by the caller (advanced by the draws).

    Returns:
        (T,) float32 in [0, 1], 0 = eyes open.
    """
    ratio = np.zeros(num_frames, np.float32)
    if num_frames <= BLINK_MIN_CLIP:
        return ratio
    lo, hi = min(BLINK_MIN_GAP, num_frames), min(num_frames // 2, BLINK_MAX_GAP)
    if hi <= lo:
        return ratio
    length = len(BLINK_SHAPE)
    most = num_frames // (lo + length) + 1  # every blink uses at least lo + 5 frames
    gaps = rng.integers(lo, hi, size=most)
    starts = np.cumsum(gaps) + length * np.arange(most)  # first frame of each blink
    starts = starts[starts + length <= num_frames - 1]  # increasing: a prefix is kept
    idx = starts[:, None] + np.arange(length)  # (K, 5) frame indices
    ratio[idx.reshape(-1)] = np.tile(np.asarray(BLINK_SHAPE, np.float32), len(starts))
    return ratio
