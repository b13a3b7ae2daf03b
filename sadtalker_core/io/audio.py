"""Audio as users bring it (files, video tracks, ComfyUI AUDIO, arrays) -> 16 kHz mono float32."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import InvalidAudioError

log = logging.getLogger(__name__)

TARGET_RATE = 16000  # Hz: what the mel front end and the coefficient networks expect
SILENCE_PEAK_DBFS = -60.0  # peak level at or below which a clip counts as silent (digital silence)
_ARRAY_BLOCK = 1 << 16  # samples per block when resampling an in-memory array (bounds memory)
_PADDING_SLACK = 4096  # samples of trailing codec padding trimmed to the container's duration
_MAX_CHANNELS = 64  # a 2-D array with more "channels" than this is rejected as a wrong layout

AudioSource = Union[str, os.PathLike, Mapping, tuple, np.ndarray, "AudioClip"]  # or a tensor


@dataclass(frozen=True)
class AudioClip:
    """A mono waveform ready for the mel front end.

    Attributes:
        waveform: (N,) float32 mono samples at ``sample_rate``, nominally in [-1, 1]; channels
            are averaged (as librosa's ``to_mono`` does).
        sample_rate: Hz of ``waveform`` (16000 after :func:`load_audio`).
        duration: seconds of the source before resampling; ``N`` equals
            ``round(duration * sample_rate)``.
        source: short description of where the audio came from, for messages.
    """

    waveform: np.ndarray
    sample_rate: int
    duration: float
    source: str = "audio"

    @property
    def num_samples(self) -> int:
        return int(self.waveform.shape[0])

    def peak_dbfs(self) -> float:
        """Peak level in dB relative to full scale (-inf for digital silence)."""
        if self.waveform.size == 0:
            return -math.inf
        peak = float(np.max(np.abs(self.waveform)))
        return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def load_audio(source: AudioSource, sample_rate: int | None = None) -> AudioClip:
    """Load audio in any form users bring it and resample it to 16 kHz mono float32.

    Args:
        source: one of
            - a path (str / PathLike) to an audio file (wav, mp3, flac, ogg, m4a, ...) or a video
              file whose (first) audio track is used (mp4, mov, mkv, ...);
            - a ComfyUI AUDIO dict ``{"waveform": (B, C, N) float tensor, "sample_rate": int}``
              (item 0 of the batch is used);
            - a ``(samples, rate)`` tuple, or an array with ``sample_rate`` given: (N,) mono or
              (C, N) / (N, C) multichannel (the short axis is the channel axis); float in
              [-1, 1] or integer PCM (int16, int32, uint8);
            - an :class:`AudioClip` (resampled if needed).
        sample_rate: rate in Hz of a bare array ``source``; ignored otherwise.

    Returns:
        :class:`AudioClip` at 16 kHz. Decoding and resampling stream through the file, so memory
        is proportional to the 16 kHz mono result.

    Raises:
        InvalidAudioError: the file is missing, unreadable or corrupt, has no audio track or
            holds no samples, or the array is malformed or holds NaN/inf.
    """
    if isinstance(source, AudioClip):
        return _resampled_clip(source.waveform, source.sample_rate, source.source)
    if isinstance(source, (str, os.PathLike)):
        return _load_file(Path(source))
    if isinstance(source, Mapping):
        return _load_comfy(source)
    if isinstance(source, tuple):
        if len(source) != 2:
            raise InvalidAudioError(
                f"An audio tuple must be (samples, sample_rate), got {len(source)} items."
            )
        samples, rate = source
        return _load_array(samples, rate, "audio array")
    if isinstance(source, np.ndarray) or hasattr(source, "detach"):
        if sample_rate is None:
            raise InvalidAudioError(
                "An audio array needs its sample rate: pass (samples, rate) or sample_rate=."
            )
        return _load_array(source, sample_rate, "audio array")
    raise InvalidAudioError(
        f"Unsupported audio input of type {type(source).__name__}. Pass a file path, a ComfyUI "
        "AUDIO dict, or (samples, sample_rate)."
    )


def check_speech(clip: AudioClip, threshold_dbfs: float = SILENCE_PEAK_DBFS) -> None:
    """Refuse a clip that holds no sound at all (nothing to lip-sync).

    Raises:
        InvalidAudioError: the peak level is at or below ``threshold_dbfs``.
    """
    peak = clip.peak_dbfs()
    if peak <= threshold_dbfs:
        level = "digital silence" if peak == -math.inf else f"peak {peak:.1f} dBFS"
        raise InvalidAudioError(
            f"The audio ({clip.source}, {clip.duration:.2f} s) is silent ({level}, at or below "
            f"{threshold_dbfs:.0f} dBFS): there is no speech to lip-sync. Check the file and its "
            "volume, or use idle mode (idle_seconds / --idle_seconds) for head motion and blinks "
            "without speech."
        )


def check_min_duration(clip: AudioClip, fps: float) -> None:
    """Refuse a clip shorter than one video frame at ``fps``.

    Raises:
        InvalidAudioError: ``clip.duration < 1 / fps``.
    """
    if clip.duration * fps < 1.0:
        raise InvalidAudioError(
            f"The audio ({clip.source}) is {clip.duration:.3f} s long, shorter than one video "
            f"frame ({1.0 / fps:.3f} s at {fps:g} fps). Use a longer audio clip."
        )


# --------------------------------------------------------------------------------------------
# Arrays and ComfyUI AUDIO


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, possibly on a GPU
        x = x.detach().cpu()
        if not x.dtype.is_floating_point:
            return x.numpy()
        return x.float().numpy()
    return np.asarray(x)


def _pcm_to_float(x: np.ndarray) -> np.ndarray:
    """Integer PCM -> float32 in [-1, 1] (the usual 2^(bits-1) scaling); floats -> float32."""
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    if x.dtype.kind == "i":
        return (x.astype(np.float32) / np.float32(2 ** (8 * x.dtype.itemsize - 1))).astype(
            np.float32
        )
    if x.dtype.kind == "u":
        half = 2 ** (8 * x.dtype.itemsize - 1)
        return ((x.astype(np.float64) - half) / half).astype(np.float32)
    raise InvalidAudioError(f"Audio samples must be numeric, got dtype {x.dtype}.")


def _downmix(x: np.ndarray, what: str) -> np.ndarray:
    """(N,), (C, N) or (N, C) -> (N,) float32 channel mean; the short axis is the channel axis."""
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise InvalidAudioError(
            f"The {what} must be (N,) mono or (C, N) / (N, C) multichannel, got shape {x.shape}."
        )
    axis = 0 if x.shape[0] <= x.shape[1] else 1
    if x.shape[axis] > _MAX_CHANNELS:
        raise InvalidAudioError(
            f"The {what} of shape {x.shape} does not look like audio: {x.shape[axis]} channels."
        )
    return x.mean(axis=axis, dtype=np.float32)


def _load_array(samples: Any, rate: Any, what: str) -> AudioClip:
    try:
        rate = int(rate)
    except (TypeError, ValueError) as e:
        raise InvalidAudioError(
            f"The sample rate of the {what} must be an integer, got {rate!r}."
        ) from e
    if rate <= 0:
        raise InvalidAudioError(f"The sample rate of the {what} must be positive, got {rate}.")
    x = _downmix(_pcm_to_float(_to_numpy(samples)), what)
    if x.size == 0:
        raise InvalidAudioError(f"The {what} is empty (0 samples).")
    if not np.isfinite(x).all():
        raise InvalidAudioError(
            f"The {what} holds NaN or infinite samples. Fix the upstream node or re-decode it."
        )
    return _resampled_clip(x, rate, what)


def _load_comfy(audio: Mapping) -> AudioClip:
    if "waveform" not in audio or "sample_rate" not in audio:
        raise InvalidAudioError(
            "A ComfyUI AUDIO input must be a dict with 'waveform' (B, C, N) and 'sample_rate', "
            f"got keys {sorted(map(str, audio))}."
        )
    wave = _to_numpy(audio["waveform"])
    if wave.ndim != 3:
        raise InvalidAudioError(
            f"The ComfyUI AUDIO waveform must be (batch, channels, samples), got {wave.shape}."
        )
    if wave.shape[0] == 0:
        raise InvalidAudioError("The ComfyUI AUDIO batch is empty.")
    if wave.shape[0] > 1:
        log.warning("AUDIO batch holds %d clips; using the first one.", wave.shape[0])
    return _load_array(wave[0], audio["sample_rate"], "ComfyUI AUDIO")


def _resampled_clip(x: np.ndarray, rate: int, what: str) -> AudioClip:
    """Mono float32 at ``rate`` -> AudioClip at 16 kHz (libswresample via PyAV, in blocks)."""
    x = np.asarray(x, dtype=np.float32)
    duration = x.shape[0] / rate
    if rate == TARGET_RATE:
        return AudioClip(x, TARGET_RATE, duration, what)
    import av

    resampler = av.AudioResampler(format="fltp", layout="mono", rate=TARGET_RATE)

    def frames() -> Iterator[Any]:
        for s in range(0, x.shape[0], _ARRAY_BLOCK):
            block = np.ascontiguousarray(x[None, s : s + _ARRAY_BLOCK])  # (1, n)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = s
            yield frame

    out = _resample_stream(frames(), resampler)
    return AudioClip(_fit(out, duration), TARGET_RATE, duration, what)


# --------------------------------------------------------------------------------------------
# Files (PyAV / FFmpeg)


def _load_file(path: Path) -> AudioClip:
    import av

    if not path.is_file():
        raise InvalidAudioError(
            f"Audio file not found: {path}. Check the path"
            + (" (it is a folder)." if path.is_dir() else ".")
        )
    name = path.name
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise InvalidAudioError(
            f"Could not read audio from {name} ({_reason(e)}). The file is damaged or not an "
            "audio/video "
            "format; re-export it (e.g. as WAV or MP3)."
        ) from e
    with container:
        if not container.streams.audio:
            kinds = ", ".join(f"{s.type}" for s in container.streams) or "no streams"
            raise InvalidAudioError(
                f"{name} has no audio track (it holds: {kinds}). Use a file with sound, or give "
                "the audio separately."
            )
        stream = container.streams.best("audio") or container.streams.audio[0]
        expected = None  # source samples the container says the track holds
        if stream.duration is not None and stream.time_base is not None and stream.rate:
            expected = int(round(float(stream.duration * stream.time_base) * stream.rate))
        chunks: list[np.ndarray] = []
        resampler = None
        layout = rate = None
        n_source, bad = 0, 0
        try:
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError:
                    bad += 1
                    continue
                for frame in decoded:
                    if (
                        resampler is None
                        or frame.layout.name != layout
                        or frame.sample_rate != rate
                    ):
                        if resampler is not None:
                            chunks += _drain(resampler, None)
                        layout, rate = frame.layout.name, frame.sample_rate
                        resampler = av.AudioResampler(
                            format="fltp", layout=frame.layout, rate=TARGET_RATE
                        )
                    n_source += frame.samples
                    chunks += _drain(resampler, frame)
            if resampler is not None:
                chunks += _drain(resampler, None)
        except av.FFmpegError as e:
            raise InvalidAudioError(
                f"Could not decode the audio of {name} ({_reason(e)}). The file is damaged; "
                "re-export it."
            ) from e
    if bad:
        log.warning("%s: skipped %d undecodable audio packet(s).", name, bad)
    if n_source == 0 or not chunks:
        raise InvalidAudioError(
            f"{name} holds no decodable audio samples (corrupt or empty audio track). "
            "Re-export the file."
        )
    source_rate = rate or stream.rate
    if expected is not None and 0 < n_source - expected <= _PADDING_SLACK:
        # AAC and other block codecs pad the last frame; the container knows the true length.
        n_source = expected
    duration = n_source / source_rate
    wav = _fit(np.concatenate(chunks), duration)
    if not np.isfinite(wav).all():
        raise InvalidAudioError(f"{name} decodes to NaN or infinite samples. Re-export the file.")
    log.info(
        "audio %s: %.2f s at %d Hz -> %d samples at 16 kHz", name, duration, source_rate, len(wav)
    )
    return AudioClip(wav, TARGET_RATE, duration, name)


def _reason(e: Exception) -> str:
    """FFmpeg's own short description of an error (without errno and file name)."""
    return str(getattr(e, "strerror", None) or e)


def _drain(resampler: Any, frame: Any) -> list[np.ndarray]:
    """Resample one frame (or flush with None) and downmix each output frame to mono."""
    return [f.to_ndarray().mean(axis=0, dtype=np.float32) for f in resampler.resample(frame)]


def _resample_stream(frames: Iterator[Any], resampler: Any) -> np.ndarray:
    chunks: list[np.ndarray] = []
    for frame in frames:
        chunks += _drain(resampler, frame)
    chunks += _drain(resampler, None)
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _fit(wav: np.ndarray, duration: float) -> np.ndarray:
    """Cut or zero-pad the resampled waveform to ``round(duration * 16 kHz)`` samples."""
    n = int(round(duration * TARGET_RATE))
    if wav.shape[0] >= n:
        return np.ascontiguousarray(wav[:n], dtype=np.float32)
    return np.pad(wav.astype(np.float32, copy=False), (0, n - wav.shape[0]))
