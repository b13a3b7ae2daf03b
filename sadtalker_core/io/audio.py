"""Audio as users bring it (files, video tracks, arrays with their rate) -> 16 kHz mono float32.

Every input takes the official path (librosa 0.9.2 ``load(sr=16000)``): decode to float32,
average the channels to mono, resample with resampy's ``kaiser_best`` sinc filter
(:mod:`.resample`) and keep ``ceil(n * 16000 / rate)`` samples. 16 kHz input is not resampled.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import InvalidAudioError
from .resample import StreamingResampler, resample

log = logging.getLogger(__name__)

TARGET_RATE = 16000  # Hz: what the mel front end and the coefficient networks expect
SILENCE_PEAK_DBFS = -60.0  # peak level at or below which a clip counts as silent (digital silence)
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
            ``ceil(n_source * 16000 / source_rate)``, the official (librosa) length.
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
            - a ``(samples, rate)`` tuple, or an array with ``sample_rate`` given: (N,) mono or
              (C, N) / (N, C) multichannel (the short axis is the channel axis); float in
              [-1, 1] or integer PCM (int16, int32, uint8);
            - an :class:`AudioClip` (resampled if needed).
        sample_rate: rate in Hz of a bare array ``source``; ignored otherwise.

    Returns:
        :class:`AudioClip` at 16 kHz, equal to the official loader's waveform (mono mean first,
        then resampy ``kaiser_best``, ``ceil(n * 16000 / rate)`` samples). Decoding and
        resampling stream through the file, so memory is proportional to the 16 kHz result.

    Raises:
        InvalidAudioError: the file is missing, unreadable or corrupt, has no audio track or
            holds no samples, or the array is malformed or holds NaN/inf.
    """
    if isinstance(source, AudioClip):
        return _resampled_clip(source.waveform, source.sample_rate, source.source)
    if isinstance(source, (str, os.PathLike)):
        return _load_file(Path(source))
    if isinstance(source, Mapping):
        raise InvalidAudioError(
            f"Audio given as a dict (keys {sorted(map(str, source))}): pass (samples, "
            "sample_rate) instead; host adapters convert their own audio types (a ComfyUI "
            "AUDIO dict: waveform[0], sample_rate)."
        )
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
        f"Unsupported audio input of type {type(source).__name__}. Pass a file path or "
        "(samples, sample_rate)."
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


def _resampled_clip(x: np.ndarray, rate: int, what: str) -> AudioClip:
    """Mono float32 at ``rate`` -> AudioClip at 16 kHz (official resampler and length)."""
    x = np.asarray(x, dtype=np.float32)
    duration = x.shape[0] / rate
    if rate == TARGET_RATE:
        return AudioClip(x, TARGET_RATE, duration, what)
    return AudioClip(resample(x, rate, TARGET_RATE), TARGET_RATE, duration, what)


# --------------------------------------------------------------------------------------------
# Files (PyAV / FFmpeg)


def probe_audio(path: Path, what: str = "Audio") -> None:
    """Check that the file ``path`` holds a decodable audio track (an audio file or a video
    with sound) from its header and first audio packets, without decoding the whole track.

    Raises:
        InvalidAudioError: missing, a folder, not a media file, no audio track, or its first
            audio packets do not decode.
    """
    import av

    with _open_audio(path, what) as container:
        stream = container.streams.audio[0]
        try:
            for packet in container.demux(stream):
                if packet.size and packet.decode():
                    return  # one decoded frame: the codec reads this file
        except av.FFmpegError as e:
            raise _undecodable(path.name, e) from e
    raise _no_samples(path.name)


def _open_audio(path: Path, what: str = "Audio") -> Any:
    """``path`` opened by PyAV (a container to close), with at least one audio track.

    Raises:
        InvalidAudioError: missing, a folder, not a media file, or no audio track.
    """
    import av

    if not path.is_file():
        folder = " (it is a folder)" if path.is_dir() else ""
        raise InvalidAudioError(f"{what} file not found: {path}{folder}. Check the path.")
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise InvalidAudioError(
            f"Could not read audio from {path.name} ({_reason(e)}). The file is damaged or not "
            "an audio/video format; re-export it (e.g. as WAV or MP3)."
        ) from e
    if not container.streams.audio:
        kinds = ", ".join(s.type for s in container.streams) or "no streams"
        container.close()
        raise InvalidAudioError(
            f"{path.name} has no audio track (it holds: {kinds}). Give a speech file (wav, mp3, "
            "flac, ogg, m4a) or a video with sound."
        )
    return container


def _undecodable(name: str, e: Exception) -> InvalidAudioError:
    return InvalidAudioError(
        f"Could not decode the audio of {name} ({_reason(e)}). The file is damaged; re-export it."
    )


def _no_samples(name: str) -> InvalidAudioError:
    return InvalidAudioError(
        f"{name} holds no decodable audio samples (corrupt or empty audio track). "
        "Re-export the file."
    )


def _load_file(path: Path) -> AudioClip:
    import av

    name = path.name
    with _open_audio(path) as container:
        stream = container.streams.best("audio") or container.streams.audio[0]
        expected = None  # source samples the container says the track holds
        if stream.duration is not None and stream.time_base is not None and stream.rate:
            expected = int(round(float(stream.duration * stream.time_base) * stream.rate))
        track = _TrackResampler()
        bad = 0
        try:
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError:
                    bad += 1
                    continue
                for frame in decoded:
                    track.add(_frame_to_mono(frame), frame.sample_rate)
        except av.FFmpegError as e:
            raise _undecodable(name, e) from e
    if bad:
        log.warning("%s: skipped %d undecodable audio packet(s).", name, bad)
    if track.n_source == 0:
        raise _no_samples(name)
    source_rate = track.rate or stream.rate
    wav = track.finish(expected)
    duration = track.duration
    if not np.isfinite(wav).all():
        raise InvalidAudioError(f"{name} decodes to NaN or infinite samples. Re-export the file.")
    log.info(
        "audio %s: %.2f s at %d Hz -> %d samples at 16 kHz", name, duration, source_rate, len(wav)
    )
    return AudioClip(wav, TARGET_RATE, duration, name)


def _reason(e: Exception) -> str:
    """FFmpeg's own short description of an error (without errno and file name)."""
    return str(getattr(e, "strerror", None) or e)


def _frame_to_mono(frame: Any) -> np.ndarray:
    """Decoded PyAV audio frame -> (n,) float32 channel mean (librosa's ``to_mono``).

    Integer PCM is scaled by 2^(bits-1) as soundfile does; packed (interleaved) and planar
    layouts are both handled.
    """
    data = frame.to_ndarray()  # planar: (C, n); packed: (1, n * C)
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T  # (1, n * C) -> (C, n)
    data = _pcm_to_float(data)
    return data[0] if channels == 1 else data.mean(axis=0, dtype=np.float32)


class _TrackResampler:
    """Streams decoded mono pieces through the official resampler, one segment per rate.

    The last ``_PADDING_SLACK`` source samples are held back until :meth:`finish`, which drops
    codec padding past the container's stated length (AAC and other block codecs pad the last
    frame) before it reaches the resampler.
    """

    def __init__(self) -> None:
        self.rate: int | None = None  # source rate of the current segment
        self.n_source = 0  # source samples added so far (all segments)
        self.duration = 0.0  # seconds of finished segments, then of the whole track
        self._stream: StreamingResampler | None = None
        self._held: list[np.ndarray] = []
        self._n_held = 0
        self._out: list[np.ndarray] = []

    def add(self, mono: np.ndarray, rate: int) -> None:
        if mono.size == 0:
            return
        if rate != self.rate:
            self._close_segment(0)
            self.rate = rate
            self._stream = StreamingResampler(rate, TARGET_RATE)
        self.n_source += mono.shape[0]
        self._held.append(mono)
        self._n_held += mono.shape[0]
        if self._n_held > 2 * _PADDING_SLACK:
            held = np.concatenate(self._held)
            self._feed(held[:-_PADDING_SLACK])
            self._held, self._n_held = [held[-_PADDING_SLACK:]], _PADDING_SLACK

    def finish(self, expected: int | None) -> np.ndarray:
        """Flush; ``expected`` is the track length the container states (None if unknown)."""
        extra = 0
        if expected is not None and 0 < self.n_source - expected <= min(
            _PADDING_SLACK, self._n_held
        ):
            extra = self.n_source - expected
        self.n_source -= extra
        self._close_segment(extra)
        return np.concatenate(self._out) if self._out else np.zeros(0, np.float32)

    def _feed(self, x: np.ndarray) -> None:
        assert self._stream is not None
        self._out.append(self._stream.push(x))

    def _close_segment(self, drop: int) -> None:
        if self._stream is None:
            return
        held = np.concatenate(self._held) if self._held else np.zeros(0, np.float32)
        self._feed(held[: held.shape[0] - drop])
        self._out.append(self._stream.finish())
        assert self.rate is not None
        self.duration += self._stream.samples_in / self.rate
        self._stream, self._held, self._n_held = None, [], 0
