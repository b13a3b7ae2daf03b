"""Head-pose sequence from mel windows with the pose CVAE: 32-frame chunking, latents, smoothing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ...errors import ShapeError
from ..audio2exp.infer import window_batch
from .cvae import Audio2PoseNet

log = logging.getLogger(__name__)


def num_latents(num_frames: int, seq_len: int = 32) -> int:
    """How many CVAE latents a clip of ``num_frames`` video frames consumes.

    Frame 0 is the reference itself; frames 1..T-1 are decoded in chunks of ``seq_len``, one
    latent per full chunk plus one for a remainder. ``200 frames -> 199 = 6*32 + 7 -> 7``.
    """
    n = max(int(num_frames) - 1, 0)
    return n // seq_len + (1 if n % seq_len else 0)


def latents_from_seed(
    num_frames: int,
    seed: int | torch.Generator,
    latent_dim: int = 64,
    seq_len: int = 32,
) -> list[torch.Tensor]:
    """Draw exactly the latents :func:`predict_pose` needs, in chunk order, on the CPU.

    Drawing on the CPU makes a seed give the same poses on every device. The global torch RNG
    is never touched.

    Args:
        num_frames: video frame count T.
        seed: an int seed, or a CPU ``torch.Generator`` to draw from (it is advanced).
        latent_dim: latent size (64).
        seq_len: frames per chunk (32).

    Returns:
        ``num_latents(T)`` float32 tensors of shape (1, latent_dim), standard normal.
    """
    if isinstance(seed, torch.Generator):
        gen = seed
    else:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return [
        torch.randn(1, latent_dim, generator=gen, device=gen.device)
        for _ in range(num_latents(num_frames, seq_len))
    ]


def _ref_pose_vector(ref_pose: torch.Tensor) -> torch.Tensor:
    flat = ref_pose.reshape(-1)
    if flat.numel() == 6:
        return flat
    if flat.numel() in (70, 73):  # a whole coefficient row: pose is columns 64:70
        return flat[64:70]
    raise ShapeError(
        f"ref_pose must be the 6 pose coefficients (or a 70/73 coefficient row), "
        f"got shape {tuple(ref_pose.shape)}."
    )


def predict_pose_motion(
    net: Audio2PoseNet,
    mel_windows: torch.Tensor | np.ndarray,
    ref_pose: torch.Tensor | np.ndarray,
    pose_style: int,
    latents: Sequence[torch.Tensor] | torch.Tensor | torch.Generator | int,
    audio_chunk: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Pose motion (relative to the reference) for every frame; frame 0 is zero.

    Chunking follows the official test path exactly: with n = T - 1 and seq_len 32, frames
    1..32, 33..64, ... each get one latent; a remainder r = n % 32 gets one more latent and is
    decoded on the last 32 frames (left-padded by repeating the first audio feature when fewer
    than 32 exist), keeping its last r outputs. All chunks are decoded as one batch.

    Args:
        net: loaded :class:`Audio2PoseNet` in eval mode; its device and dtype are used.
        mel_windows: (T, 80, 16) or (1, T, 1, 80, 16) normalised log-mel windows.
        ref_pose: (6,) reference pose of the source (angles in radians, translation); a
            (70,) / (73,) coefficient row is also accepted (columns 64:70 are used).
        pose_style: style id in [0, 46).
        latents: ``num_latents(T)`` latents in chunk order, as a list of (1, 64) tensors or a
            (K, 1, 64) / (K, 64) tensor; or a seed / CPU ``torch.Generator`` to draw them from
            (see :func:`latents_from_seed`).
        audio_chunk: frames per mel-encoder pass (memory bound only).
        progress: optional ``(done_frames, total_frames)`` callback for the audio encoding.

    Returns:
        (T, 6) float tensor on the net's device.

    Raises:
        ShapeError: wrong input shapes or a latent count that does not match T.
        ValueError: ``pose_style`` out of range.
    """
    param = next(net.parameters())
    device, dtype = param.device, param.dtype
    c = net.config
    mel = window_batch(mel_windows, device, dtype)  # (T, 1, 80, 16)
    t = mel.shape[0]
    if t < 1:
        raise ShapeError("mel_windows holds no frames; at least one video frame is needed.")
    if not 0 <= int(pose_style) < c.num_styles:
        raise ValueError(f"pose_style must be in 0..{c.num_styles - 1}, got {pose_style}.")
    ref = _ref_pose_vector(torch.as_tensor(ref_pose)).to(device=device, dtype=dtype)

    if isinstance(latents, (int, torch.Generator)):
        latents = latents_from_seed(t, latents, c.latent_dim, c.seq_len)
    if isinstance(latents, torch.Tensor):
        z = latents
    elif len(latents) == 0:
        z = torch.zeros(0, c.latent_dim)
    else:
        z = torch.stack([torch.as_tensor(v) for v in latents])
    z = z.reshape(-1, c.latent_dim).to(device=device, dtype=dtype)  # (K, 1, 64) -> (K, 64)
    need = num_latents(t, c.seq_len)
    if z.shape[0] != need:
        raise ShapeError(
            f"{t} frames need {need} latents (one per {c.seq_len}-frame chunk), got {z.shape[0]}."
        )

    motion = torch.zeros(t, c.pose_dim, device=device, dtype=dtype)
    n = t - 1
    if n == 0:
        return motion
    with torch.no_grad():
        feats = torch.empty(n, c.audio_dim, device=device, dtype=dtype)
        for s in range(0, n, audio_chunk):
            e = min(s + audio_chunk, n)
            feats[s:e] = net.encode_audio(mel[1 + s : 1 + e].unsqueeze(0))[0]  # (e-s, 512)
            if progress is not None:
                progress(e, n)

        full, rem = divmod(n, c.seq_len)
        covered = full * c.seq_len  # frames 1..covered come from full chunks
        chunks = [feats[:covered].reshape(full, c.seq_len, c.audio_dim)]  # (full, 32, 512)
        if rem:
            tail = feats[-c.seq_len :]  # last min(n, 32) frames
            if tail.shape[0] < c.seq_len:
                pad = tail[:1].expand(c.seq_len - tail.shape[0], c.audio_dim)
                tail = torch.cat([pad, tail], dim=0)  # left-pad to (32, 512)
            chunks.append(tail.unsqueeze(0))
        audio = torch.cat(chunks, dim=0)  # (K, 32, 512)
        k = audio.shape[0]
        style = torch.full((k,), int(pose_style), device=device, dtype=torch.long)
        pred = net.decode(z, style, ref.expand(k, -1), audio)  # (K, 32, 6)

    motion[1 : 1 + covered] = pred[:full].reshape(-1, c.pose_dim)  # (full, 32, 6) -> (covered, 6)
    if rem:
        motion[1 + covered :] = pred[full, -rem:]  # last rem steps of the remainder chunk
    log.debug("audio2pose: %d frames, %d chunks, style %d", t, k, int(pose_style))
    return motion


def predict_pose(
    net: Audio2PoseNet,
    mel_windows: torch.Tensor | np.ndarray,
    ref_pose: torch.Tensor | np.ndarray,
    pose_style: int,
    latents: Sequence[torch.Tensor] | torch.Tensor | torch.Generator | int,
    audio_chunk: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Raw (unsmoothed) head pose per frame: ``ref_pose + predict_pose_motion(...)``.

    Args: see :func:`predict_pose_motion`.

    Returns:
        (T, 6) float tensor on the net's device; row 0 equals ``ref_pose``. Smooth it with
        :func:`smooth_pose` before use, as the official pipeline does.
    """
    motion = predict_pose_motion(
        net, mel_windows, ref_pose, pose_style, latents, audio_chunk, progress
    )
    ref = _ref_pose_vector(torch.as_tensor(ref_pose)).to(device=motion.device, dtype=motion.dtype)
    return ref + motion  # (6,) + (T, 6) -> (T, 6)


def smooth_pose(
    pose: torch.Tensor | np.ndarray, window: int = 13, polyorder: int = 2
) -> torch.Tensor | np.ndarray:
    """Savitzky-Golay smoothing of a pose sequence along time (scipy, mode 'interp').

    The window is ``window`` frames, or the largest odd number <= T for shorter clips (as the
    official pipeline does). When that window cannot hold a degree-``polyorder`` fit (T <= 2
    with the defaults, where the official code raises), the polynomial would pass through every
    sample anyway, so the sequence is returned unchanged.

    Args:
        pose: (T, 6) pose sequence (tensor or array).
        window: odd smoothing window in frames.
        polyorder: polynomial order of the local fit.

    Returns:
        (T, 6) smoothed sequence, same type (tensor: same device and dtype) as ``pose``.
    """
    from scipy.signal import savgol_filter

    is_tensor = isinstance(pose, torch.Tensor)
    arr = pose.detach().cpu().numpy() if is_tensor else np.asarray(pose)
    if arr.ndim != 2:
        raise ShapeError(f"smooth_pose expects a (T, 6) sequence, got {arr.shape}.")
    t = arr.shape[0]
    w = window if t >= window else max((t - 1) // 2 * 2 + 1, 0)
    if w <= polyorder:
        return pose.clone() if is_tensor else arr.copy()
    out = savgol_filter(arr, w, polyorder, axis=0, mode="interp")
    if is_tensor:
        return torch.as_tensor(out).to(device=pose.device, dtype=pose.dtype)
    return out
