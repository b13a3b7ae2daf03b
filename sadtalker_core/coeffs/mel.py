"""Audio front end: 16 kHz waveform -> normalised log-mel -> one 80x16 mel window per frame."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InvalidAudioError, ShapeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MelConfig:
    """Parameters of the SadTalker (Wav2Lip) mel spectrogram; defaults are the trained values."""

    sample_rate: int = 16000  # Hz; the waveform must already be at this rate
    n_fft: int = 800  # FFT size in samples (50 ms)
    hop: int = 200  # STFT hop in samples (12.5 ms -> 80 mel frames per second)
    win: int = 800  # periodic Hann window length in samples (== n_fft)
    n_mels: int = 80  # number of mel bins
    fmin: float = 55.0  # Hz, lowest mel filter edge
    fmax: float = 7600.0  # Hz, highest mel filter edge
    preemphasis: float = 0.97  # y[n] = x[n] - k * x[n-1]
    min_level_db: float = -100.0  # dB floor; amplitude floor = 10 ** (min_level_db / 20)
    ref_level_db: float = 20.0  # dB subtracted after the log
    max_abs_value: float = 4.0  # output range is [-max_abs_value, max_abs_value]
    fps: int = 25  # video frames per second the windows are aligned to
    window: int = 16  # mel frames per video-frame window (200 ms)
    chunk_frames: int = (
        4096  # STFT frames per vectorised block (bounds peak memory); no effect on values
    )

    @property
    def mel_fps(self) -> float:
        """Mel frames per second (80.0 at 16 kHz / hop 200)."""
        return self.sample_rate / self.hop


DEFAULT_MEL = MelConfig()


def num_frames(n_samples: int, fps: int = 25, sample_rate: int = 16000) -> int:
    """Number of whole video frames covered by ``n_samples`` audio samples.

    Args:
        n_samples: waveform length in samples at ``sample_rate``.
        fps: video frame rate.
        sample_rate: audio sample rate in Hz.

    Returns:
        ``int(n_samples / (sample_rate / fps))`` (truncation, as the official code does).
    """
    return int(n_samples / (sample_rate / fps))


def crop_or_pad(
    wav: np.ndarray, frames: int, fps: int = 25, sample_rate: int = 16000
) -> np.ndarray:
    """Cut or zero-pad a waveform to exactly ``int(frames * sample_rate / fps)`` samples.

    Args:
        wav: (N,) mono waveform.
        frames: video frame count (usually ``num_frames(len(wav))``).
        fps: video frame rate.
        sample_rate: audio sample rate in Hz.

    Returns:
        (L,) waveform of the same dtype, L = ``int(frames * (sample_rate / fps))``.
    """
    length = int(frames * (sample_rate / fps))
    if len(wav) >= length:
        return wav[:length]
    return np.pad(wav, (0, length - len(wav)), mode="constant")


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3  # Hz per mel in the linear part
    min_log_hz = 1000.0  # start of the log region
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0  # log-region step per mel
    mel = hz / f_sp
    log_part = hz >= min_log_hz
    return np.where(
        log_part, min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep, mel
    )


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    hz = f_sp * mel
    log_part = mel >= min_log_mel
    return np.where(log_part, min_log_hz * np.exp(logstep * (mel - min_log_mel)), hz)


@lru_cache(maxsize=8)
def _mel_basis_cached(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    n_bins = n_fft // 2 + 1
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # (n_bins,)
    lo, hi = _hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax))
    edges_hz = _mel_to_hz(np.linspace(lo, hi, n_mels + 2))  # (n_mels + 2,) filter corners
    widths = np.diff(edges_hz)  # (n_mels + 1,)
    ramps = edges_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, n_bins)
    rising = -ramps[:-2] / widths[:-1, None]  # (n_mels, n_bins)
    falling = ramps[2:] / widths[1:, None]  # (n_mels, n_bins)
    # Triangles are stored in float32 first, then area-normalised (Slaney) and rounded again:
    # this double rounding reproduces the reference filterbank bit for bit.
    tri = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    enorm = 2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels])  # (n_mels,)
    basis = (tri * enorm[:, None]).astype(np.float32)
    assert basis.shape == (n_mels, n_bins)
    basis.setflags(write=False)
    return basis


def mel_basis(config: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Slaney-style mel filterbank (area-normalised triangles on the Slaney mel scale).

    Args:
        config: mel parameters.

    Returns:
        (n_mels, n_fft // 2 + 1) float32 read-only array; (80, 401) by default.
    """
    if config.fmax > config.sample_rate / 2:
        raise ValueError(
            f"fmax {config.fmax} Hz exceeds the Nyquist frequency {config.sample_rate / 2} Hz."
        )
    return _mel_basis_cached(
        config.sample_rate, config.n_fft, config.n_mels, float(config.fmin), float(config.fmax)
    )


@lru_cache(maxsize=8)
def _hann_periodic(win: int, n_fft: int) -> np.ndarray:
    n = np.arange(win, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win)  # periodic Hann (fftbins=True)
    left = (n_fft - win) // 2
    window = np.pad(window, (left, n_fft - win - left))  # centred inside the FFT frame
    window.setflags(write=False)
    return window


def melspectrogram(
    wav_16k: np.ndarray, config: MelConfig = DEFAULT_MEL, dtype: type = np.float32
) -> np.ndarray:
    """Normalised log-mel spectrogram of a mono waveform, as SadTalker's audio nets expect it.

    Pre-emphasis, centred STFT (zero padding of n_fft/2 on both sides, periodic Hann),
    magnitude, mel projection, ``20*log10(max(floor, mel)) - ref_level_db`` and the symmetric
    clipped normalisation, all in float64. The STFT runs in blocks of ``config.chunk_frames``
    frames, so memory grows linearly with the audio length.

    Args:
        wav_16k: (N,) mono waveform at ``config.sample_rate``, float, nominally in [-1, 1].
        config: mel parameters.
        dtype: output dtype; float32 (what the networks get) or float64 (the exact maths).

    Returns:
        (1 + N // hop, n_mels) array of ``dtype`` in [-max_abs_value, max_abs_value];
        (641, 80) for 8 s.

    Raises:
        ShapeError: the waveform is not 1-D.
        InvalidAudioError: the waveform is empty or holds NaN/inf.
    """
    x = np.asarray(wav_16k)
    if x.ndim != 1:
        raise ShapeError(f"melspectrogram expects a mono waveform of shape (N,), got {x.shape}.")
    if x.size == 0:
        raise InvalidAudioError(
            "The audio is empty (0 samples). Provide at least one video frame of audio."
        )
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise InvalidAudioError(
            "The audio holds NaN or infinite samples. Re-export or re-decode the file."
        )

    # Pre-emphasis (float64): y[0] = x[0], y[n] = x[n] - k x[n-1].
    y = x.copy()
    y[1:] -= config.preemphasis * x[:-1]

    half = config.n_fft // 2
    y = np.pad(y, (half, half), mode="constant")  # centred frames, zero padding
    n_frames = 1 + (len(y) - config.n_fft) // config.hop
    # (n_frames, n_fft) strided view, no copy: frame f starts at sample f * hop.
    step = y.strides[0]
    frames = np.lib.stride_tricks.as_strided(
        y, shape=(n_frames, config.n_fft), strides=(step * config.hop, step), writeable=False
    )
    window = _hann_periodic(config.win, config.n_fft)
    basis_t = mel_basis(config).astype(np.float64).T  # (n_bins, n_mels)
    floor = np.exp(config.min_level_db / 20 * np.log(10))  # amplitude floor (1e-5)

    out = np.empty((n_frames, config.n_mels), dtype=dtype)
    for s in range(0, n_frames, config.chunk_frames):
        block = frames[s : s + config.chunk_frames] * window  # (b, n_fft)
        mag = np.abs(np.fft.rfft(block, axis=1))  # (b, n_fft) -> (b, n_bins)
        mel = mag @ basis_t  # (b, n_bins) -> (b, n_mels)
        db = 20 * np.log10(np.maximum(floor, mel)) - config.ref_level_db
        top = config.max_abs_value
        norm = (2 * top) * ((db - config.min_level_db) / -config.min_level_db) - top
        out[s : s + len(block)] = np.clip(norm, -top, top)
    return out


def window_starts(frames: int, config: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """First mel-frame index of each video frame's window, before clamping.

    ``start_i = int(mel_fps * ((i - 2) / fps))`` with truncation toward zero, so the window of
    frame i begins two video frames early (-6, -3, 0, 3, 6, 9, 12, 16, ... at 80 mel fps / 25 fps).

    Args:
        frames: number of video frames T.

    Returns:
        (T,) int64 array.
    """
    i = np.arange(frames, dtype=np.float64)
    return np.trunc(config.mel_fps * ((i - 2) / float(config.fps))).astype(np.int64)


def mel_windows(mel: np.ndarray, frames: int, config: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Cut one (n_mels, window) mel patch per video frame.

    Indices outside the spectrogram are clamped to its first/last frame (edge repetition).

    Args:
        mel: (n_mel_frames, n_mels) output of :func:`melspectrogram`.
        frames: number of video frames T (see :func:`num_frames`).

    Returns:
        (T, n_mels, window) array of mel's dtype; (200, 80, 16) for 8 s of audio.

    Raises:
        ShapeError: ``mel`` is not (n_mel_frames, n_mels) or is empty.
    """
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] != config.n_mels or mel.shape[0] == 0:
        raise ShapeError(
            f"mel_windows expects a (n_mel_frames, {config.n_mels}) mel, got {mel.shape}."
        )
    idx = window_starts(frames, config)[:, None] + np.arange(config.window)  # (T, window)
    idx = np.clip(idx, 0, mel.shape[0] - 1)
    windows = mel[idx]  # (T, window, n_mels)
    return np.ascontiguousarray(windows.transpose(0, 2, 1))  # -> (T, n_mels, window)


def audio_to_mel_windows(wav_16k: np.ndarray, config: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Waveform -> per-frame mel windows, including the cut/pad to whole video frames.

    Args:
        wav_16k: (N,) mono waveform at ``config.sample_rate``.

    Returns:
        (T, n_mels, window) float32 with T = ``num_frames(N)``.

    Raises:
        InvalidAudioError: the audio is shorter than one video frame.
    """
    frames = num_frames(len(wav_16k), config.fps, config.sample_rate)
    if frames < 1:
        raise InvalidAudioError(
            f"The audio is {len(wav_16k)} samples long "
            f"({len(wav_16k) / config.sample_rate:.3f} s), "
            f"shorter than one video frame ({1 / config.fps:.3f} s). Use a longer audio clip."
        )
    wav = crop_or_pad(np.asarray(wav_16k), frames, config.fps, config.sample_rate)
    return mel_windows(melspectrogram(wav, config), frames, config)
