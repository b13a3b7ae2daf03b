"""Fast CPU convolutions for the renderer: Winograd/FFT (NNPACK) instead of direct convolution.

On CPUs the generator's 3x3 convolutions are compute bound (about 1.2 TFLOP per 256 frame).
NNPACK, which ships inside the PyTorch wheels for x86-64, evaluates them with Winograd
F(6x6, 3x3) transforms: 2-3x faster than oneDNN's direct convolution on AVX2 machines, in fp32,
with a relative error of about 1e-5 per convolution (a rendered frame stays within the goldens'
tolerance of the exact result).

The fast path is opt-in per call site: :class:`Conv2d` (a drop-in ``nn.Conv2d`` with the same
state-dict keys) and :func:`conv2d` use it only inside :func:`winograd`, only on CPU float32
tensors without autograd, only for convolutions large enough to gain, and only on CPUs where it
was measured to pay (see :func:`worthwhile`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

_ENABLED: ContextVar[bool] = ContextVar("sadtalker_winograd", default=False)

# Measured on an AVX2 CPU: NNPACK loses on thin convolutions (3 -> 64, 64 -> 3 channels) and
# on 1x1 ones (no arithmetic to save); it wins 2-6x from about 512 multiply-adds per output.
MIN_REDUCTION = 512  # in_channels * kh * kw
MIN_WEIGHTS = 16384  # out_channels * in_channels * kh * kw
MAX_THREADS = 8  # largest intra-op thread count the fast path is used with (see worthwhile)


@functools.cache
def available() -> bool:
    """True when this PyTorch build has a working NNPACK (it must be initialised before use)."""
    try:
        if not torch._nnpack_available():  # also initialises the library
            return False
        x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4) / 32
        w = torch.ones(3, 2, 3, 3) / 9
        with torch.no_grad():
            got = torch._nnpack_spatial_convolution(x, w, None, [1, 1])
            want = F.conv2d(x, w, padding=1)
        ok = torch.allclose(got, want, atol=1e-5)
    except (AttributeError, RuntimeError) as e:  # private API: absent or failing on this build
        log.debug("NNPACK unavailable: %s", e)
        return False
    if not ok:
        log.warning("NNPACK gives wrong results on this machine; using direct convolutions")
    return ok


def _best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@functools.cache
def _faster_than_direct(threads: int) -> bool:
    """Time one SPADE-sized convolution both ways (about 0.1 s once per process and thread count).

    Guards against NNPACK builds that are slow on this machine.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 128, 64, 64, generator=gen)
    w = torch.randn(512, 128, 3, 3, generator=gen) * 0.03
    with torch.inference_mode():
        direct = _best_of(lambda: F.conv2d(x, w, padding=1))
        fast = _best_of(lambda: torch._nnpack_spatial_convolution(x, w, None, [1, 1]))
    log.debug(
        "3x3 conv on %d threads: direct %.1f ms, Winograd %.1f ms",
        threads,
        direct * 1e3,
        fast * 1e3,
    )
    return fast < 0.8 * direct


def worthwhile() -> bool:
    """True when NNPACK works here and should beat oneDNN's direct convolution.

    Whole frames were measured, not single convolutions: on a 2-thread AVX2 CPU Winograd renders
    1.5-1.9x faster; on a 16-thread AVX-512/AMX Xeon it renders 2x slower although one
    convolution alone ran 4x faster there. So it is used on AVX2-class x86 CPUs (no AVX-512)
    with at most ``MAX_THREADS`` threads, and only if a one-time timing agrees.
    """
    threads = torch.get_num_threads()
    return (
        threads <= MAX_THREADS
        and torch.backends.cpu.get_cpu_capability() == "AVX2"
        and available()
        and _faster_than_direct(threads)
    )


@contextlib.contextmanager
def winograd(enabled: bool = True) -> Iterator[bool]:
    """Within this block, :func:`conv2d` uses NNPACK where it pays; yields whether it is on."""
    token = _ENABLED.set(enabled and worthwhile())
    try:
        yield _ENABLED.get()
    finally:
        _ENABLED.reset(token)


def _gains(x: torch.Tensor, weight: torch.Tensor) -> bool:
    out_ch, in_ch, kh, kw = weight.shape
    return (
        kh > 1
        and in_ch * kh * kw >= MIN_REDUCTION
        and out_ch * in_ch * kh * kw >= MIN_WEIGHTS
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


def conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
) -> torch.Tensor:
    """Stride-1 ``F.conv2d`` with symmetric ``padding``; Winograd inside :func:`winograd` blocks.

    NNPACK's batched entry point fails on some shapes, so a batch is convolved item by item
    (batch 1 is also the fastest way to render on a CPU).
    """
    if _ENABLED.get() and _gains(x, weight):
        x = x.contiguous()
        weight = weight.contiguous()
        pad = [padding, padding]
        outs = [
            torch._nnpack_spatial_convolution(x[i : i + 1], weight, bias, pad)
            for i in range(x.shape[0])
        ]
        return outs[0] if len(outs) == 1 else torch.cat(outs)
    return F.conv2d(x, weight, bias, padding=padding)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (stride 1, square 'same' padding) that takes the Winograd path when enabled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding
        if (
            self.stride != (1, 1)
            or self.dilation != (1, 1)
            or self.groups != 1
            or self.padding_mode != "zeros"
            or isinstance(p, str)
            or p[0] != p[1]
        ):
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, self.padding[0])
