"""The speech side of a stream (:class:`SpeechStream`): PCM pieces in at any rate, the official
16 kHz waveform (streaming kaiser_best resampling) and its mel frames out as soon as no later
audio can change them, with each model frame's 16-frame mel window; :class:`_Tail`, the bounded
growing buffer the stream's stages share."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..coeffs.generate import MODEL_FPS
from ..coeffs.mel import DEFAULT_MEL, melspectrogram
from ..errors import InvalidAudioError
from ..io.audio import TARGET_RATE, _pcm_to_float, _to_numpy
from ..io.resample import StreamingResampler

HOP = DEFAULT_MEL.hop  # 200 samples per mel frame
_HALF_FFT = DEFAULT_MEL.n_fft // 2  # 400: the STFT reaches this far past a mel frame's centre
_MAX_CHANNELS = 16
PREFIX_FRAMES = 3  # mel frames recomputed before a piece (its first sample lacks pre-emphasis)


def _window_start(i: np.ndarray | int) -> np.ndarray:
    """First mel frame of model frame i's window, before clamping (``mel.window_starts``)."""
    i = np.asarray(i, dtype=np.float64)
    return np.trunc(DEFAULT_MEL.mel_fps * ((i - 2) / float(DEFAULT_MEL.fps))).astype(np.int64)


class _Tail:
    """A growing 1-D/2-D sequence that forgets its head: global indices, bounded memory."""

    def __init__(self, width: int | None = None, dtype=np.float32):
        shape = (0,) if width is None else (0, width)
        self.data = np.zeros(shape, dtype)
        self.start = 0  # global index of data[0]

    @property
    def stop(self) -> int:
        return self.start + self.data.shape[0]

    def append(self, x: np.ndarray) -> None:
        if x.shape[0]:
            self.data = np.concatenate([self.data, x.astype(self.data.dtype, copy=False)])

    def get(self, a: int, b: int) -> np.ndarray:
        if a < self.start or b > self.stop:
            raise IndexError(f"[{a}, {b}) outside the kept [{self.start}, {self.stop})")
        return self.data[a - self.start : b - self.start]

    def forget_before(self, index: int) -> None:
        cut = min(max(index, self.start), self.stop) - self.start
        if cut > 0:
            self.data = self.data[cut:].copy()
            self.start += cut


class SpeechStream:
    """Speech received so far, as the coefficient networks hear it.

    Args:
        sample_rate: Hz of the pushed samples (resampled to 16 kHz as officially).

    Raises:
        ValueError: a non-positive sample rate.
    """

    def __init__(self, sample_rate: int):
        if int(sample_rate) <= 0:
            raise ValueError(f"The sample rate must be a positive integer, got {sample_rate}.")
        self.sample_rate = int(sample_rate)
        self._resampler = (
            None
            if self.sample_rate == TARGET_RATE
            else StreamingResampler(
                self.sample_rate, TARGET_RATE, min_batch=self.sample_rate // 100
            )
        )  # resampled every 10 ms of input at least (per-call costs of tiny chunks)
        self.received = 0  # source samples received
        self.wav = _Tail()  # 16 kHz waveform (the resampler's final outputs)
        self.mel = _Tail(DEFAULT_MEL.n_mels)  # final mel frames
        self.finished = False

    @property
    def seconds(self) -> float:
        """Duration of the speech received."""
        return self.received / self.sample_rate

    def push(self, samples: Any) -> int:
        """Add (n,) or (n, channels) float or integer PCM; returns n (0: nothing added).

        Raises:
            InvalidAudioError: NaN/inf samples or more than 16 channels.
        """
        x = _pcm_to_float(_to_numpy(samples))
        if x.ndim == 2 and 1 <= x.shape[1] <= _MAX_CHANNELS:
            x = x.mean(axis=1, dtype=np.float32)  # (n, channels) -> (n,), as load_audio
        if x.ndim != 1:
            raise InvalidAudioError(
                f"An audio chunk must be (n,) mono or (n, channels) interleaved with at most "
                f"{_MAX_CHANNELS} channels, got shape {x.shape}."
            )
        if not np.isfinite(x).all():
            raise InvalidAudioError("An audio chunk holds NaN or infinite samples.")
        if x.shape[0]:
            self.received += x.shape[0]
            self.wav.append(x if self._resampler is None else self._resampler.push(x))
        return x.shape[0]

    def finish(self) -> None:
        """The end of the speech: the resampler's last samples."""
        self.finished = True
        if self._resampler is not None:
            self.wav.append(self._resampler.finish())

    def audio(self, a: int, b: int) -> np.ndarray:
        """Output audio samples [a, b) at 16 kHz, float32, zero past the speech."""
        stop = self.wav.stop
        have = self.wav.get(min(a, stop), min(b, stop))
        return np.concatenate([have, np.zeros(max(0, b - max(a, stop)), np.float32)])

    def _model_sample(self, a: int, b: int, n_out: int, model_len: int) -> np.ndarray:
        """The offline model waveform [a, b): output audio cut/padded to ``model_len``."""
        x = np.zeros(b - a, np.float32)
        real = min(b, n_out, model_len, self.wav.stop)
        if real > a:
            x[: real - a] = self.wav.get(a, real)
        return x

    def extend_mel(self, n_out: int, model_len: int) -> None:
        """Add the mel frames that became final (all of them once finished): the same frames
        as the whole clip's (``n_out`` output samples, ``model_len`` model samples)."""
        if self.finished:
            known, last = model_len, model_len // HOP + 1  # every mel frame of the clip
        else:
            known = min(self.wav.stop, n_out, model_len)  # samples no later audio changes
            last = max(0, (known - _HALF_FFT) // HOP + 1)  # frames whose STFT lies inside
        f0 = self.mel.stop
        if last <= f0:
            return
        a = max(0, (f0 - PREFIX_FRAMES) * HOP)
        b = model_len if self.finished else (last - 1) * HOP + _HALF_FFT
        piece = self._model_sample(a, b, n_out, model_len)
        mel = melspectrogram(piece)  # same frames as the whole clip's from skip on
        skip = f0 - a // HOP
        self.mel.append(mel[skip : skip + last - f0])

    def windows_final(self, t_model: int) -> int:
        """Model frames whose mel window is final."""
        if self.finished:
            return t_model
        f = self.mel.stop
        # window of frame i: mel frames start_i .. start_i + 15, start_i = trunc(3.2 (i - 2))
        i = min(t_model, int((f - DEFAULT_MEL.window) * DEFAULT_MEL.fps / DEFAULT_MEL.mel_fps) + 4)
        while i > 0 and int(_window_start(i - 1)) + DEFAULT_MEL.window > f:
            i -= 1
        return max(0, i)

    def windows(self, a: int, b: int, t_model: int) -> np.ndarray:
        """(b - a, 80, 16) mel windows of model frames [a, b)."""
        starts = _window_start(np.arange(a, b))  # (b - a,)
        idx = starts[:, None] + np.arange(DEFAULT_MEL.window)  # (b - a, 16)
        last = (t_model * (TARGET_RATE // MODEL_FPS)) // HOP if self.finished else None
        idx = np.clip(idx, 0, last if last is not None else idx.max())
        mel = self.mel.get(int(idx.min()), int(idx.max()) + 1)
        win = mel[idx - int(idx.min())]  # (b - a, 16, 80)
        return np.ascontiguousarray(win.transpose(0, 2, 1))  # -> (b - a, 80, 16)

    def forget(self, first_frame: int, audio_done: int) -> None:
        """Drop what no model frame from ``first_frame`` on and no output audio from sample
        ``audio_done`` on needs."""
        self.mel.forget_before(int(_window_start(first_frame)) - 1)
        keep = max(0, (self.mel.stop - PREFIX_FRAMES) * HOP)
        self.wav.forget_before(min(keep, audio_done))
