"""Band-limited sinc resampling with the numerics of resampy's ``kaiser_best`` filter.

The official SadTalker loads speech with librosa 0.9.2 (``librosa.load(path, sr=16000)``), which
resamples with resampy 0.4.3 and the ``kaiser_best`` filter, then cuts or zero-pads the result to
``ceil(n_in * sr_out / sr_in)`` samples. This module rebuilds that filter from its published
parameters and evaluates the same interpolation rule, float32 rounding order included, with
vectorised numpy (no numba), in one pass or streamed in chunks with identical results.

Convention:
    Output sample ``t`` sits at input time ``t * (sr_in / sr_out)`` (in input samples, both
    grids start at 0). For ``sr_out < sr_in`` the filter is stretched by ``sr_in / sr_out`` and
    scaled by ``sr_out / sr_in`` (anti-aliasing low pass at ``rolloff`` x the output Nyquist).
    Samples outside the input count as zeros. Only ``floor(n_in * sr_out / sr_in)`` outputs
    are interpolated; the official length may add one trailing zero.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = [
    "KAISER_BEST",
    "SincFilter",
    "StreamingResampler",
    "resample",
    "resampled_length",
    "sinc_table",
]

_BLOCK_VALUES = 1 << 20  # float64 values per work block (8 MB): bounds memory, not results
_MIN_BATCH = 1 << 18  # input samples gathered before computing (small pushes are batched)
_THREADS = min(4, os.cpu_count() or 1)  # worker threads for long inputs (results unchanged)
_MAX_PHASE_MATRIX = 1 << 22  # largest polyphase matrix (values) before the per-sample path


@dataclass(frozen=True)
class SincFilter:
    """Kaiser-windowed sinc interpolation filter, stored as its right half sampled finely.

    The table holds ``rolloff * sinc(rolloff * z) * kaiser(z)`` for ``z`` from 0 to
    ``zero_crossings`` in steps of ``1 / 2**precision``, where ``kaiser`` is the right half of
    a symmetric Kaiser window of length ``2 * zero_crossings * 2**precision + 1``.
    """

    zero_crossings: int  # sinc zero crossings kept on each side of the centre
    precision: int  # log2 of the table entries per zero crossing
    beta: float  # Kaiser window shape parameter
    rolloff: float  # pass-band edge as a fraction of the (output) Nyquist frequency

    @property
    def steps_per_crossing(self) -> int:
        """Table entries per zero crossing (8192 for ``kaiser_best``)."""
        return 1 << self.precision


# resampy 0.4.3 ``kaiser_best``: 50 zero crossings x 8192 steps, -120 dB stop band. Its docs
# print beta 12.9846 and rolloff 0.917347 (rounded); the shipped table also stores the rolloff in
# full, and these full-precision values rebuild the shipped table bit for bit (the rounded ones
# differ from it by at most 8e-9).
KAISER_BEST = SincFilter(
    zero_crossings=50, precision=13, beta=12.984585247040012, rolloff=0.9173473712608761
)


def sinc_table(spec: SincFilter = KAISER_BEST) -> np.ndarray:
    """Right half of the interpolation filter, as resampy ships it for ``kaiser_best``.

    Args:
        spec: filter parameters.

    Returns:
        (zero_crossings * 2**precision + 1,) float64, read-only; (409601,) for ``kaiser_best``.
        Entry ``j`` is the filter at ``j / 2**precision`` zero crossings from the centre.
    """
    return _sinc_table_cached(spec)


@lru_cache(maxsize=4)
def _sinc_table_cached(spec: SincFilter) -> np.ndarray:
    from scipy.special import i0

    n = spec.zero_crossings * spec.steps_per_crossing
    z = np.linspace(0.0, spec.zero_crossings, n + 1)  # (n + 1,) zero-crossing units
    sinc = spec.rolloff * np.sinc(spec.rolloff * z)
    r = np.arange(n + 1) / n  # position inside the window's right half, 0..1
    taper = i0(spec.beta * np.sqrt(1.0 - r**2)) / i0(spec.beta)
    table = taper * sinc
    table.setflags(write=False)
    return table


def resampled_length(n_in: int, sr_in: int, sr_out: int) -> int:
    """Official output length: ``ceil(n_in * sr_out / sr_in)`` (librosa's ``fix_length`` size).

    Computed as librosa 0.9.2 does, ``ceil(n_in * (sr_out / sr_in))`` in float64; this equals
    the exact rational ceiling for all usual rates. ``n_in`` when the rates are equal.
    """
    if sr_in == sr_out:
        return int(n_in)
    return int(math.ceil(n_in * (float(sr_out) / sr_in)))


def _interpolated_length(n_in: int, sr_in: int, sr_out: int) -> int:
    """Outputs resampy interpolates: ``floor(n_in * sr_out / sr_in)``; the rest are zeros."""
    return int(n_in * float(sr_out) / float(sr_in))


def resample(
    x: np.ndarray, sr_in: int, sr_out: int = 16000, spec: SincFilter = KAISER_BEST
) -> np.ndarray:
    """Resample a mono signal as librosa 0.9.2 + resampy ``kaiser_best`` do.

    Args:
        x: (N,) mono samples at ``sr_in``, any float dtype (computed in float64).
        sr_in: input rate in Hz, > 0.
        sr_out: output rate in Hz, > 0.
        spec: interpolation filter (``KAISER_BEST`` is the official one).

    Returns:
        (resampled_length(N, sr_in, sr_out),) float32. Equal rates return a float32 copy.

    Raises:
        ValueError: a rate is not positive or ``x`` is not 1-D.
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"resample expects a mono signal of shape (N,), got {x.shape}.")
    stream = StreamingResampler(sr_in, sr_out, spec)
    step = _BLOCK_VALUES  # push in pieces: the stream never copies the whole input
    parts = [stream.push(x[i : i + step]) for i in range(0, x.shape[0], step)]
    parts.append(stream.finish())
    return np.concatenate(parts)


class StreamingResampler:
    """Chunked :func:`resample`: feed input pieces, collect output pieces.

    The concatenated outputs of :meth:`push` and :meth:`finish` equal :func:`resample` of the
    concatenated inputs (to float rounding, well below 1e-7), whatever the chunk sizes. Small
    chunks are batched: outputs come once about 262k input samples are held, so memory stays
    bounded by the largest chunk plus that batch.

    Example:
        >>> rs = StreamingResampler(48000, 16000)
        >>> out = [rs.push(chunk) for chunk in chunks] + [rs.finish()]
    """

    def __init__(
        self,
        sr_in: int,
        sr_out: int = 16000,
        spec: SincFilter = KAISER_BEST,
        min_batch: int = _MIN_BATCH,
    ) -> None:
        """``min_batch``: input samples gathered before outputs are computed (1 for live audio:
        every push returns what it completes; the outputs are the same)."""
        sr_in, sr_out = int(sr_in), int(sr_out)
        self._min_batch = max(1, int(min_batch))
        if sr_in <= 0 or sr_out <= 0:
            raise ValueError(f"Sample rates must be positive, got {sr_in} -> {sr_out} Hz.")
        self.sr_in, self.sr_out = sr_in, sr_out
        self._kernel = None if sr_in == sr_out else _make_kernel(sr_in, sr_out, spec)
        self._buf = np.zeros(0, np.float32)  # input samples from global index _buf_start on
        self._buf_start = 0
        self._n_in = 0  # input samples pushed so far
        self._n_out = 0  # output samples returned so far
        self._done = False

    @property
    def samples_in(self) -> int:
        """Input samples pushed so far."""
        return self._n_in

    @property
    def samples_out(self) -> int:
        """Output samples returned so far."""
        return self._n_out

    @property
    def buffered_samples(self) -> int:
        """Input samples held for outputs not yet computed (at most one batch plus a chunk)."""
        return int(self._buf.shape[0])

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add (n,) input samples; return the (m,) float32 outputs that are now complete."""
        if self._done:
            raise RuntimeError("StreamingResampler.push after finish().")
        chunk = np.asarray(chunk)
        if chunk.ndim != 1:
            raise ValueError(f"Chunks must be mono, shape (n,), got {chunk.shape}.")
        self._n_in += chunk.shape[0]
        if self._kernel is None:
            out = chunk.astype(np.float32)
            self._n_out += out.shape[0]
            return out
        self._buf = np.concatenate([self._buf, chunk.astype(np.float32, copy=False)])
        if self._buf.shape[0] < self._min_batch:
            return np.zeros(0, np.float32)  # wait for more input: per-call costs dominate
        return self._emit(self._kernel.ready(self._n_in))

    def finish(self) -> np.ndarray:
        """Flush: the remaining outputs up to ``resampled_length(samples_in, ...)``."""
        if self._done:
            raise RuntimeError("StreamingResampler.finish called twice.")
        self._done = True
        total = resampled_length(self._n_in, self.sr_in, self.sr_out)
        if self._kernel is None:
            return np.zeros(0, np.float32)
        n_interp = max(0, min(_interpolated_length(self._n_in, self.sr_in, self.sr_out), total))
        parts = []
        done = self._n_out
        if n_interp > done:
            # Samples past the end of the input are zeros: pad the buffer to cover every window.
            stop = self._kernel.round_up(n_interp)
            missing = self._kernel.needed_end(stop) - (self._buf_start + self._buf.shape[0])
            if missing > 0:
                self._buf = np.concatenate([self._buf, np.zeros(missing, np.float32)])
            parts.append(self._emit(stop)[: n_interp - done])  # drop the rounding overshoot
            done = n_interp
        parts.append(np.zeros(total - done, np.float32))  # librosa's fix_length zeros
        self._n_out = total
        self._buf = np.zeros(0, np.float32)
        return np.concatenate(parts)

    def _emit(self, stop: int) -> np.ndarray:
        """Compute outputs [_n_out, stop) from the buffer, in memory-bounded blocks."""
        kernel = self._kernel
        assert kernel is not None
        edges = list(range(self._n_out, stop, kernel.block_outputs)) + [stop]
        spans = list(zip(edges[:-1], edges[1:]))
        buf, buf_start = self._buf, self._buf_start

        def run(span: tuple[int, int]) -> np.ndarray:
            return kernel.compute(buf, buf_start, *span)

        if _THREADS > 1 and len(spans) >= 2 * _THREADS:
            # numpy releases the GIL inside each gather / multiply / add: blocks run in parallel.
            with ThreadPoolExecutor(_THREADS) as pool:
                pieces = list(pool.map(run, spans))
        else:
            pieces = [run(span) for span in spans]
        self._n_out = max(self._n_out, stop)
        # Drop input no later output needs.
        keep_from = kernel.needed_start(self._n_out)
        cut = keep_from - self._buf_start
        if cut > 0:
            self._buf = self._buf[cut:].copy()
            self._buf_start = keep_from
        if not pieces:
            return np.zeros(0, np.float32)
        return np.concatenate(pieces).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Interpolation kernels


class _Kernel:
    """The interpolation rule for one rate pair (filter table, phases, tap counts).

    Output ``t`` is evaluated as resampy does: ``time = t * (1 / ratio)``, ``n = int(time)``,
    ``frac = scale * (time - n)``. The left wing weighs ``x[n - i]`` with the table (linearly
    interpolated) at ``frac * S + i * step``, the right wing ``x[n + 1 + k]`` at
    ``(scale - frac) * S + k * step``, where ``S = 2**precision``, ``scale = min(1, ratio)``
    and ``step = int(scale * S)``; a wing stops where it would leave the table.

    Accumulation follows resampy's float32 output buffer: each product ``weight * x`` is formed
    in float64, added to the float32 partial sum and rounded back to float32, left wing
    (i = 0, 1, ...) first, then the right wing. Reproducing this rounding (not only the maths)
    is what keeps quiet mel bands within 1e-4 of the official ones.
    """

    def __init__(self, sr_in: int, sr_out: int, spec: SincFilter) -> None:
        self.ratio = float(sr_out) / sr_in
        self.time_step = 1.0 / self.ratio  # input samples per output sample
        self.scale = min(1.0, self.ratio)
        table = sinc_table(spec)
        if self.ratio < 1:
            table = self.ratio * table  # stretched filter: keep unit DC gain
        self.table = table
        self.delta = np.diff(table, append=table[-1])  # (nwin,) slope to the next entry
        self.num_table = spec.steps_per_crossing
        self.step = int(self.scale * self.num_table)
        self.taps = table.shape[0] // self.step + 1  # most taps a wing can have
        self.block_outputs = max(1, _BLOCK_VALUES // (4 * self.taps))

    def wings(self, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Left and right wing weights for (B,) scaled fractions -> two (B, taps) arrays."""
        return self._wing(frac), self._wing(self.scale - frac)

    def _wing(self, frac: np.ndarray) -> np.ndarray:
        nwin = self.table.shape[0]
        index = frac * self.num_table
        offset = index.astype(np.int64)  # (B,)
        eta = index - offset
        count = (nwin - offset) // self.step  # (B,) taps inside the table
        i = np.arange(self.taps)
        pos = offset[:, None] + i * self.step  # (B, taps)
        inside = i < count[:, None]
        pos = np.where(inside, pos, 0)
        w = self.table[pos] + eta[:, None] * self.delta[pos]
        return np.where(inside, w, 0.0)

    def direct(self, buf: np.ndarray, buf_start: int, t: np.ndarray) -> np.ndarray:
        """Outputs at (B,) indices ``t``, each from its own float64 time (any rate pair).

        ``buf`` holds the input from global index ``buf_start`` on; samples outside it count as
        zeros. Returns (B,) float32.
        """
        time = t * self.time_step  # (B,) as resampy: t * (1 / ratio)
        n = time.astype(np.int64)
        left, right = self.wings(self.scale * (time - n))  # (B, taps) each
        i = np.arange(self.taps)
        x_left = _take(buf, n[:, None] - i - buf_start)  # (B, taps): x[n - i]
        x_right = _take(buf, n[:, None] + 1 + i - buf_start)  # (B, taps): x[n + 1 + i]
        weights = np.concatenate([left, right], axis=1).T  # (2 * taps, B) in resampy's order
        samples = np.concatenate([x_left, x_right], axis=1).T
        return _accumulate_f32(weights * samples)

    # Subclasses define: needed_start, needed_end, round_up, ready, compute.


def _accumulate_f32(products: np.ndarray) -> np.ndarray:
    """Sum (J, ...) float64 products over axis 0 with a float32 running sum, in order."""
    total = np.zeros(products.shape[1:], np.float32)
    tmp = np.empty(products.shape[1:])
    for p in products:
        np.add(p, total, out=tmp)
        total[...] = tmp
    return total


def _take(buf: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """buf[idx] as float64, zeros where idx falls outside the buffer (outside the signal)."""
    valid = (idx >= 0) & (idx < buf.shape[0])
    return np.where(valid, buf[np.where(valid, idx, 0)].astype(np.float64), 0.0)


class _PerSampleKernel(_Kernel):
    """Any rate pair: weights computed per output sample (gathers; slower, same rule)."""

    def _n(self, t: int) -> int:
        return int(t * self.time_step)

    def needed_start(self, t: int) -> int:
        return self._n(t) - self.taps + 1

    def needed_end(self, t_end: int) -> int:
        return self._n(t_end - 1) + self.taps + 1 if t_end > 0 else 0

    def round_up(self, t: int) -> int:
        return t

    def ready(self, n_seen: int) -> int:
        t = max(0, int((n_seen - self.taps - 1) * self.ratio))
        while self.needed_end(t + 1) <= n_seen:
            t += 1
        while t > 0 and self.needed_end(t) > n_seen:
            t -= 1
        return t

    def compute(self, buf: np.ndarray, buf_start: int, t0: int, t1: int) -> np.ndarray:
        return self.direct(buf, buf_start, np.arange(t0, t1))


class _PolyphaseKernel(_Kernel):
    """Rational rates with a small period: weights per phase, shared by all periods.

    With ``sr_out / sr_in = L / M`` in lowest terms, output ``t = q * P + p`` (``P = D * L``
    outputs per super-period of D periods) sits ``q * D * M + p * M / L`` input samples in, so
    its weights depend on ``p`` only, and tap ``j`` of every output of a block is one gather
    from the block's input frames (``frames[q] = x[q * D * M - pad :]``). The exception is a
    time that is an exact integer in rational terms but falls just below it in float64
    (``t * (1 / ratio)``): resampy then takes ``n - 1`` with ``frac = 1``; those few outputs
    are recomputed with :meth:`direct`.
    """

    def __init__(self, sr_in: int, sr_out: int, spec: SincFilter, periods: int) -> None:
        super().__init__(sr_in, sr_out, spec)
        g = math.gcd(sr_in, sr_out)
        self.L, self.M = sr_out // g, sr_in // g
        self.D = periods
        self.P, self.MP = self.D * self.L, self.D * self.M  # outputs / inputs per super-period
        self.pad = self.taps
        self.width = self.MP + self.pad + self.taps  # input window of one super-period
        p = np.arange(self.P)
        base = (p * self.M) // self.L  # (P,) whole input samples to each output
        frac = self.scale * (((p * self.M) % self.L) / self.L)  # (P,)
        left, right = self.wings(frac)  # (P, taps) each
        i = np.arange(self.taps)
        rows = np.concatenate([base[:, None] + self.pad - i, base[:, None] + self.pad + 1 + i], 1)
        self.rows = np.ascontiguousarray(rows.T)  # (J, P) frame offset of tap j, J = 2 * taps
        self.weights = np.ascontiguousarray(np.concatenate([left, right], 1).T)  # (J, P)
        # t * time_step rounds below an exact integer only if time_step < M / L as reals.
        self.may_fall_below = Fraction(self.time_step) < Fraction(self.M, self.L)
        self.block_outputs = self.P * max(1, _BLOCK_VALUES // (64 * self.P))

    def needed_start(self, t: int) -> int:
        return (t // self.P) * self.MP - self.pad

    def needed_end(self, t_end: int) -> int:
        q_end = -(-t_end // self.P)
        return (q_end - 1) * self.MP - self.pad + self.width if q_end > 0 else 0

    def round_up(self, t: int) -> int:
        return -(-t // self.P) * self.P

    def ready(self, n_seen: int) -> int:
        q = (n_seen + self.pad - self.width) // self.MP + 1
        return max(0, q) * self.P

    def compute(self, buf: np.ndarray, buf_start: int, t0: int, t1: int) -> np.ndarray:
        q0, q1 = t0 // self.P, -(-t1 // self.P)
        start = q0 * self.MP - self.pad - buf_start  # buffer index of frame q0
        lead = max(0, -start)  # frames reaching before the signal start: zeros
        src = np.concatenate([np.zeros(lead, buf.dtype), buf]) if lead else buf
        start += lead
        n_frames = q1 - q0
        seg = src[start : start + (n_frames - 1) * self.MP + self.width].astype(np.float64)
        total = np.zeros((n_frames, self.P), np.float32)
        tmp = np.empty((n_frames, self.P))
        if self.L == 1:
            # Output t of the block reads x[t * M + row]: every tap is one strided slice.
            span = (n_frames * self.P - 1) * self.M + 1
            for row, weight in zip(self.rows[:, 0], self.weights[:, 0]):
                np.multiply(seg[row : row + span : self.M].reshape(tmp.shape), weight, out=tmp)
                tmp += total
                total[...] = tmp  # float32 running sum
        else:
            frames = np.lib.stride_tricks.as_strided(
                seg, (n_frames, self.width), (seg.strides[0] * self.MP, seg.strides[0])
            ).copy()  # (Q, width), overlapping windows made contiguous for fast gathers
            for rows, weights in zip(self.rows, self.weights):  # tap by tap, resampy's order
                np.take(frames, rows, axis=1, out=tmp)  # (Q, P) samples of this tap
                tmp *= weights
                tmp += total
                total[...] = tmp  # float32 running sum
        out = total.ravel()  # (Q, P) -> (Q * P,)
        if self.may_fall_below:
            t = np.arange(q0, q1)[:, None] * self.P + np.arange(0, self.P, self.L)  # (Q, D)
            t = t.ravel()
            below = t[(t * self.time_step).astype(np.int64) < (t * self.M) // self.L]
            if below.size:
                out[below - q0 * self.P] = self.direct(buf, buf_start, below)
        return out[t0 - q0 * self.P : t1 - q0 * self.P]


def _make_kernel(sr_in: int, sr_out: int, spec: SincFilter) -> _Kernel:
    probe = _Kernel(sr_in, sr_out, spec)
    g = math.gcd(sr_in, sr_out)
    up = sr_out // g  # L
    periods = max(1, -(-64 // up))  # at least 64 outputs per gather row
    if periods * up * 2 * probe.taps <= _MAX_PHASE_MATRIX:
        return _PolyphaseKernel(sr_in, sr_out, spec, periods)
    return _PerSampleKernel(sr_in, sr_out, spec)
