"""Coefficient stage of SadTalker: speech -> per-frame 3DMM motion (ExpNet expression + PoseVAE pose).

The stage turns a source face's reference coefficients and a speech clip into one row of 70
coefficients per output video frame: expression 0:64 from ExpNet (with a seeded random blink
schedule), head pose 64:70 from the PoseVAE (seeded latents, Savitzky-Golay smoothed). The
networks run at 25 fps; other frame rates are produced by resampling the 25 fps sequence.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import FIELD_HELP, CoeffConfig
from ..errors import ShapeError
from ..io.audio import (
    TARGET_RATE,
    AudioClip,
    AudioSource,
    check_min_duration,
    check_speech,
    load_audio,
)
from ..models import default_checkpoint_dirs, network_file, network_ref
from ..options import check_speech as audio_or_idle
from ..progress import Progress
from ..types import Coeffs, Face
from .audio2exp import Audio2ExpNet, predict_expression
from .audio2pose import (
    Audio2PoseNet,
    latents_from_seed,
    predict_pose,
    smooth_pose,
)
from .blink import blink_schedule
from .mel import DEFAULT_MEL, crop_or_pad, mel_windows, melspectrogram

log = logging.getLogger(__name__)

MODEL_FPS = 25  # frame rate the coefficient networks were trained at
SILENT_MEL = -4.0  # normalised log-mel value of digital silence (the clipped floor)
EXP_DIM = 64  # expression coefficients, columns 0:64 of a row
POSE_SLICE = slice(64, 70)  # pose columns of a row: angles 64:67 (rad), translation 67:70
ROW_DIM = 70  # coefficients per frame


class CoeffModels:
    """The two networks of the stage, on one device.

    Args:
        exp_net: ExpNet (audio -> expression), or a model-cache handle returning it.
        pose_net: PoseVAE (audio -> head motion), or a model-cache handle returning it.
    """

    def __init__(
        self,
        exp_net: Audio2ExpNet | Callable[[], Audio2ExpNet],
        pose_net: Audio2PoseNet | Callable[[], Audio2PoseNet],
    ):
        self._exp, self._pose = exp_net, pose_net

    @property
    def exp_net(self) -> Audio2ExpNet:
        return self._exp if isinstance(self._exp, torch.nn.Module) else self._exp()

    @property
    def pose_net(self) -> Audio2PoseNet:
        return self._pose if isinstance(self._pose, torch.nn.Module) else self._pose()

    @classmethod
    def load(
        cls,
        dirs: Sequence[Path] | str | os.PathLike | None = None,
        size: int = 256,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> CoeffModels:
        """Load both networks from the official files (through the model cache).

        Args:
            dirs: checkpoint folders (searched in order), or one folder, or None for
                :func:`~sadtalker_core.models.default_checkpoint_dirs`.
            size: preferred combined file (256/512); the audio networks are the same in both.
            device: torch device to run on.
            dtype: parameter dtype (float32 unless you know the device needs less).

        Raises:
            ModelNotFoundError: no file holding the networks was found.
            UnsupportedCheckpointError: the file is damaged or of another architecture.
        """
        if dirs is None or isinstance(dirs, (str, os.PathLike)):
            dirs = default_checkpoint_dirs(dirs)
        dirs = [Path(d) for d in dirs]
        exp = network_ref("audio2exp", network_file("audio2exp", dirs, size), device, dtype)
        pose = network_ref("audio2pose", network_file("audio2pose", dirs, size), device, dtype)
        return cls(exp, pose)

    @property
    def device(self) -> torch.device:
        return next(self.exp_net.parameters()).device


# --------------------------------------------------------------------------------------------
# Building blocks


def resample_coeffs(
    rows: np.ndarray, src_fps: float, dst_fps: float, num_frames: int
) -> np.ndarray:
    """Linear-in-time resampling of a coefficient sequence to another frame rate.

    Output frame j shows time ``j / dst_fps``, i.e. source position ``j * src_fps / dst_fps``,
    so lip motion stays aligned with the audio; positions past the last source frame hold it.

    Args:
        rows: (T_src, D) coefficients at ``src_fps``.
        src_fps: frame rate of ``rows``.
        dst_fps: wanted frame rate.
        num_frames: T_dst, output frame count.

    Returns:
        (T_dst, D) float32.
    """
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ShapeError(f"resample_coeffs expects a non-empty (T, D) array, got {rows.shape}.")
    last = rows.shape[0] - 1
    pos = np.minimum(np.arange(num_frames, dtype=np.float64) * (src_fps / dst_fps), last)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, last)
    w = (pos - i0)[:, None]  # (T_dst, 1)
    out = (1.0 - w) * rows[i0].astype(np.float64) + w * rows[i1].astype(np.float64)
    return out.astype(np.float32)


def tile_rows(rows: np.ndarray, num_frames: int) -> np.ndarray:
    """Repeat a reference sequence until it covers ``num_frames`` (the official tiling)."""
    return rows[np.arange(num_frames) % rows.shape[0]]


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def source_row(face: Face | np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    """The (70,) reference row ``[exp 64, angle 3, trans 3]`` of a Face or a coefficient row.

    Accepts a :class:`Face`, or a (70,), (73,), (1, 70) or (1, 73) row.

    Raises:
        ShapeError: anything else.
    """
    if isinstance(face, Face):
        row = face.ref_coeffs
    else:
        arr = _as_numpy(face)
        if arr.ndim == 2 and arr.shape[0] == 1:
            arr = arr[0]  # (1, 70) -> (70,)
        if arr.ndim != 1 or arr.shape[0] < ROW_DIM:
            raise ShapeError(
                "The source must be a Face or its (70,) / (73,) coefficient row "
                f"[exp 64, angle 3, trans 3, ...], got shape {arr.shape}."
            )
        row = arr[:ROW_DIM]
    row = np.asarray(row, np.float32)
    if not np.isfinite(row).all():
        raise ShapeError("The source coefficient row holds NaN or infinite values.")
    return row


def _reference_rows(rows: Any, what: str, min_dim: int) -> np.ndarray:
    arr = _as_numpy(rows)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]  # (1, N, D) -> (N, D)
    if arr.ndim == 1:
        arr = arr[None]  # one row
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < min_dim:
        raise ShapeError(
            f"{what} must be per-frame coefficient rows (N, >= {min_dim}) [exp 64, angle 3, "
            f"trans 3, ...], got shape {arr.shape}."
        )
    arr = np.asarray(arr[:, :ROW_DIM], np.float32)
    if not np.isfinite(arr).all():
        raise ShapeError(f"{what} holds NaN or infinite values.")
    return arr


def frame_counts(duration: float, fps: float) -> tuple[int, int]:
    """Frame counts of a clip: output frames at ``fps`` and the 25 fps frames the networks run.

    Args:
        duration: seconds of audio (or idle time).
        fps: output frame rate.

    Returns:
        ``(T, T25)``: ``T = round(duration * fps)`` (at least 1; halves round up) and the fewest
        25 fps frames whose times cover every output frame (``T25 = T`` at 25 fps).
    """
    t_out = max(1, int(math.floor(duration * fps + 0.5)))
    if fps == MODEL_FPS:
        return t_out, t_out
    # Output frame j sits at 25 fps position j * 25 / fps; interpolation needs the frame after.
    return t_out, int(math.ceil((t_out - 1) * MODEL_FPS / fps - 1e-9)) + 1


def _fit_samples(wav: np.ndarray, n: int) -> np.ndarray:
    if wav.shape[0] >= n:
        return wav[:n]
    return np.pad(wav, (0, n - wav.shape[0]))


@dataclass(frozen=True)
class _Timeline:
    """What the speech (or idle time) gives the networks: frame counts, the output audio and
    one mel window per 25 fps model frame."""

    source: str  # the audio's name, or "idle"
    out_frames: int  # T at the output fps
    model_frames: int  # frames at the networks' 25 fps
    audio: np.ndarray  # (N,) 16 kHz, exactly out_frames / fps seconds
    windows: np.ndarray  # (model_frames, 80, 16) mel windows


def _timeline(audio: AudioSource | AudioClip | None, cfg: CoeffConfig) -> _Timeline:
    fps = float(cfg.fps)
    audio_or_idle(audio is not None, cfg.idle_seconds)
    if cfg.idle_seconds is not None:
        duration, source, wav = float(cfg.idle_seconds), "idle", None
    else:
        clip = audio if isinstance(audio, AudioClip) and audio.sample_rate == TARGET_RATE else None
        clip = clip or load_audio(audio)
        check_min_duration(clip, fps)
        check_speech(clip)
        duration, source, wav = clip.duration, clip.source, clip.waveform
    t_out, t_model = frame_counts(duration, fps)
    n_out = int(round(t_out * TARGET_RATE / fps))  # samples of exactly t_out / fps seconds
    out_audio = np.zeros(n_out, np.float32) if wav is None else _fit_samples(wav, n_out)
    if wav is None:
        # Digital silence (the clipped floor), what a silent recording gives: the mouth stays
        # closed. The official idle mode feeds 0 instead, a mid-level value, not silence.
        windows = np.full((t_model, DEFAULT_MEL.n_mels, DEFAULT_MEL.window), SILENT_MEL, np.float32)
    else:
        model_wav = crop_or_pad(out_audio, t_model, MODEL_FPS, TARGET_RATE)
        windows = mel_windows(melspectrogram(model_wav), t_model)  # (t_model, 80, 16)
    return _Timeline(source, t_out, t_model, out_audio, windows)


def _draw_blinks(frames: int, seed: int) -> np.ndarray:
    """(frames,) the official blink schedule drawn from ``seed`` (the parity tests put the
    official run's own draw here)."""
    return blink_schedule(frames, np.random.default_rng(seed))


def _blink_ratio(has_ref: bool, cfg: CoeffConfig, frames: int) -> np.ndarray:
    """(frames,) eye-closure ratio fed to ExpNet: none when blinks come from a reference video
    or are off, else the seeded official schedule."""
    if has_ref or not cfg.blink:
        return np.zeros(frames, np.float32)
    return np.asarray(_draw_blinks(frames, cfg.seed), np.float32).reshape(frames)


def _expression(
    models: CoeffModels,
    windows: torch.Tensor,
    src_exp: np.ndarray,
    blink_rows: np.ndarray | None,
    cfg: CoeffConfig,
    progress: Progress | None,
) -> np.ndarray:
    """(T, 64) expression: ExpNet on the mel windows, the reference expression (the source's,
    or a reference video's rows tiled to the clip) and the eye-closure ratio (the seeded blinks;
    none when the reference video drives the blinks), scaled around the source expression by
    ``expression_scale``."""
    frames = windows.shape[0]
    ratio = _blink_ratio(blink_rows is not None, cfg, frames)
    ref_exp = src_exp if blink_rows is None else tile_rows(blink_rows, frames)[:, :EXP_DIM]
    exp = predict_expression(models.exp_net, windows, ref_exp, ratio, cfg.chunk_frames, progress)
    exp = exp.float().cpu().numpy()  # (T, 64)
    if cfg.expression_scale != 1.0:
        exp = src_exp + np.float32(cfg.expression_scale) * (exp - src_exp)
    return exp


def _head_pose(
    models: CoeffModels,
    windows: torch.Tensor,
    src_pose: np.ndarray,
    pose_rows: np.ndarray | None,
    cfg: CoeffConfig,
    progress: Progress | None,
) -> np.ndarray:
    """(T, 6) head pose: PoseVAE on seeded latents, smoothed, plus a reference video's relative
    motion, scaled around the source pose by ``head_motion_scale``; the source pose in every
    frame in still mode (the PoseVAE is not run)."""
    frames = windows.shape[0]
    if cfg.still:
        if pose_rows is not None:
            log.warning("still mode keeps the source pose: ref_pose is ignored.")
        return np.broadcast_to(src_pose, (frames, 6))
    pose_cfg = models.pose_net.config
    gen = torch.Generator(device="cpu").manual_seed(int(cfg.seed))
    latents = latents_from_seed(frames, gen, pose_cfg.latent_dim, pose_cfg.seq_len)
    raw = predict_pose(
        models.pose_net,
        windows,
        src_pose,
        int(cfg.pose_style),
        latents,
        cfg.chunk_frames,
        progress,
    )
    pose = np.asarray(smooth_pose(raw.float().cpu().numpy()), np.float32)  # (T, 6)
    if pose_rows is not None:
        ref = tile_rows(pose_rows[:, POSE_SLICE], frames)
        pose = pose + (ref - pose_rows[0, POSE_SLICE])  # relative motion of the video
    if cfg.head_motion_scale != 1.0:
        pose = src_pose + np.float32(cfg.head_motion_scale) * (pose - src_pose)
    return pose


# --------------------------------------------------------------------------------------------
# The stage


def _network_progress(
    progress: Progress | None, t_model: int, run_pose: bool
) -> tuple[Progress | None, Progress | None]:
    """One ``(done, total)`` scale over both networks: ExpNet's ``t_model`` frames, then the
    PoseVAE's ``t_model - 1`` motion steps (none in still mode)."""
    if progress is None:
        return None, None
    total = t_model + (t_model - 1 if run_pose else 0)
    return (
        lambda done, _total: progress(done, total),
        lambda done, _steps: progress(t_model + done, total),
    )


def generate_coeffs(
    face: Face | np.ndarray | torch.Tensor,
    audio: AudioSource | AudioClip | None,
    config: CoeffConfig | None = None,
    *,
    models: CoeffModels,
    ref_eyeblink: np.ndarray | torch.Tensor | None = None,
    ref_pose: np.ndarray | torch.Tensor | None = None,
    progress: Progress | None = None,
) -> Coeffs:
    """Speech (or idle time) -> one row of 70 motion coefficients per output video frame.

    Steps, at 25 fps: mel windows of the audio (one 80x16 window per frame); ExpNet on the
    windows, the reference expression and the blink schedule; PoseVAE on the windows with one
    seeded latent per 32-frame chunk, Savitzky-Golay smoothing (window 13, order 2); optional
    reference-video pose motion; expression / head-motion scaling around the source
    (``head_motion_scale`` scales the whole pose deviation, reference-video motion included).
    The result is resampled to ``config.fps`` when that is not 25. ``still`` replaces the pose
    by the source pose (the PoseVAE is not run) and keeps the blinks.

    Frame count: ``round(duration * fps)``, at least 1; the returned audio is cut or zero-padded
    to exactly that many frames. (The official code truncates instead of rounding, so at 25 fps
    it has one frame less when the last partial frame is at least half a frame long.)

    Randomness: the blink schedule comes from ``numpy.random.default_rng(seed)`` and the latents
    from ``torch.Generator().manual_seed(seed)``, both created here; global RNGs are untouched,
    so the same seed gives bit-identical coefficients on the same device.

    Args:
        face: the source :class:`Face`, or its (70,) / (73,) reference coefficient row.
        audio: speech as :func:`~sadtalker_core.io.audio.load_audio` accepts it (path,
            ``(samples, rate)``, :class:`AudioClip`); None in idle mode.
        config: stage options (defaults: :class:`CoeffConfig`).
        models: the loaded networks (:meth:`CoeffModels.load`).
        ref_eyeblink: (N, >= 64) per-frame coefficient rows of a reference video at 25 fps; its
            expressions replace the reference expression fed to ExpNet (tiled to the clip) and
            the random blinks are turned off, so blinks (and expressions) follow the video.
        ref_pose: (N, >= 70) per-frame rows of a reference video at 25 fps; its pose motion
            ``rows[t, 64:70] - rows[0, 64:70]`` (tiled) is added to the predicted pose.
        progress: ``(done, total) -> None`` called once per network chunk; it may raise to
            cancel (the exception propagates).

    Returns:
        :class:`Coeffs` with (T, 70) float32 rows at ``config.fps``, the 16 kHz audio and the
        options used.

    Raises:
        InvalidAudioError: unreadable, silent or too-short audio (see ``audio_io``).
        ShapeError: malformed face row or reference rows.
        OptionError: both audio and ``idle_seconds`` given, or neither.
    """
    cfg = config or CoeffConfig()
    src = source_row(face)
    src_exp, src_pose = src[:EXP_DIM], src[POSE_SLICE]
    fps = float(cfg.fps)
    timeline = _timeline(audio, cfg)
    t_out, t_model = timeline.out_frames, timeline.model_frames

    blink_rows = (
        None if ref_eyeblink is None else _reference_rows(ref_eyeblink, "ref_eyeblink", EXP_DIM)
    )
    pose_rows = None if ref_pose is None else _reference_rows(ref_pose, "ref_pose", ROW_DIM)

    run_pose = not cfg.still
    exp_progress, pose_progress = _network_progress(progress, t_model, run_pose)
    windows_t = torch.from_numpy(timeline.windows).to(models.device)  # one transfer, both nets
    exp = _expression(models, windows_t, src_exp, blink_rows, cfg, exp_progress)
    pose = _head_pose(models, windows_t, src_pose, pose_rows, cfg, pose_progress)

    rows = np.concatenate([exp, pose], axis=1).astype(np.float32)  # (t_model, 70)
    if t_model != t_out or fps != MODEL_FPS:
        rows = resample_coeffs(rows, MODEL_FPS, fps, t_out)
    del windows_t

    options = cfg.to_json()
    options.update(
        audio=timeline.source,
        model_fps=MODEL_FPS,
        model_frames=t_model,
        ref_eyeblink=blink_rows is not None,
        ref_pose=pose_rows is not None and run_pose,
    )
    log.info(
        "coefficients: %d frames at %g fps (%d at 25 fps) from %s",
        t_out,
        fps,
        t_model,
        timeline.source,
    )
    return Coeffs(
        rows,
        fps,
        timeline.audio,
        TARGET_RATE,
        options,
        input_yaw=cfg.input_yaw,
        input_pitch=cfg.input_pitch,
        input_roll=cfg.input_roll,
    )


__all__ = [
    "FIELD_HELP",
    "MODEL_FPS",
    "CoeffConfig",
    "CoeffModels",
    "frame_counts",
    "generate_coeffs",
    "resample_coeffs",
    "source_row",
    "tile_rows",
]
