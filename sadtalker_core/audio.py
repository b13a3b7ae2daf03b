"""Speech as the SadTalker networks hear it: any audio -> official 16 kHz mono -> log-mel frames.

Public facade over :mod:`.io.audio` (decoding, mono mix, resampling), :mod:`.io.resample`
(resampy ``kaiser_best`` in numpy) and :mod:`.coeffs.mel` (the Wav2Lip mel front end).

Example:
    >>> from sadtalker_core.audio import load_speech, melspectrogram, num_frames, crop_or_pad
    >>> wav = load_speech("speech_44k.wav")  # (N,) float32 at 16 kHz
    >>> wav = crop_or_pad(wav, num_frames(len(wav)))  # whole 25 fps video frames, as official
    >>> mel = melspectrogram(wav)  # (1 + len(wav) // 200, 80) float32 in [-4, 4]
"""

from __future__ import annotations

import numpy as np

from .coeffs.mel import DEFAULT_MEL, MelConfig, crop_or_pad, num_frames
from .coeffs.mel import melspectrogram as _melspectrogram
from .io.audio import TARGET_RATE, AudioSource, load_audio
from .io.resample import KAISER_BEST, SincFilter, StreamingResampler, resample, resampled_length

__all__ = [
    "KAISER_BEST",
    "TARGET_RATE",
    "MelConfig",
    "SincFilter",
    "StreamingResampler",
    "crop_or_pad",
    "load_speech",
    "melspectrogram",
    "num_frames",
    "resample",
    "resampled_length",
]


def load_speech(source: AudioSource, sample_rate: int | None = None) -> np.ndarray:
    """Load speech exactly as the official SadTalker hears it (librosa 0.9.2 ``load``).

    Decode to float32 (integer PCM scaled by 2^(bits-1)), average the channels to mono, resample
    to 16 kHz with resampy's ``kaiser_best`` windowed sinc (rebuilt in numpy, no numba) and keep
    ``ceil(n * 16000 / rate)`` samples. 16 kHz input is returned unresampled.

    Args:
        source: a file path (wav, flac, mp3, ogg, m4a, or a video whose audio track is used);
            ``(samples, rate)`` with samples (N,) mono or (C, N) / (N, C) multichannel, float
            in [-1, 1] or integer PCM, numpy or torch; a bare array with ``sample_rate``; an
            :class:`~sadtalker_core.io.audio.AudioClip`.
        sample_rate: rate in Hz of a bare array ``source``; ignored otherwise.

    Returns:
        (N,) float32 waveform at 16 kHz, nominally in [-1, 1].

    Raises:
        InvalidAudioError: the input is missing, unreadable, corrupt, empty, malformed or holds
            NaN/inf.
    """
    return load_audio(source, sample_rate).waveform


def melspectrogram(wav16k: np.ndarray, config: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Normalised log-mel spectrogram the SadTalker audio networks take, one row per mel frame.

    Pre-emphasis 0.97, centred STFT (n_fft 800, hop 200, periodic Hann), magnitude, 80 Slaney
    mel bands (55-7600 Hz), ``20 log10(max(1e-5, mel)) - 20`` dB, then scaled and clipped to
    [-4, 4]; computed in float64 and returned as float32. The official pipeline first cuts or
    zero-pads the waveform to whole 25 fps video frames (``crop_or_pad(wav,
    num_frames(len(wav)))``, 640 samples per frame); do that before calling this to get the
    official mel.

    Args:
        wav16k: (N,) mono waveform at 16 kHz (see :func:`load_speech`), float.
        config: mel parameters; the default is the trained one.

    Returns:
        (frames, 80) float32 with ``frames = 1 + N // 200`` (80 mel frames per second); rows
        are time, columns mel bands from low to high. E.g. (439, 80) for 137 video frames.

    Raises:
        ShapeError: the waveform is not 1-D.
        InvalidAudioError: the waveform is empty or holds NaN/inf.
    """
    return _melspectrogram(wav16k, config, np.float32)
