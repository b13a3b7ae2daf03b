"""The SPADE decoder compiled with ``torch.compile`` (inductor, weights frozen) for CPU renders.

The decoder is three quarters of a frame's arithmetic, all fixed-shape convolutions and norms.
On a 2-core AVX-512 (+BF16) EPYC, inductor with frozen weights (prepacked oneDNN convolutions,
fused pointwise ops, no layout reorders between them) rendered a 256 frame in 2.58 s instead of
2.79 s in fp32 (1.08x) and 1.48 s instead of 1.54 s in bf16 (1.04x), with the CPU heap reuse of
``devices.reused_cpu_memory`` in both; the decoder alone ran 1.35x faster before that reuse.
Compiling takes 15-25 s once per process (5-14 s when inductor's disk cache holds it), so
``auto`` compiles only on AVX-512 CPUs and only clips long enough to pay it back; AVX2 CPUs keep
the Winograd path of :mod:`.conv`, which measured better there. The compiled result deviates from eager fp32 by about 1e-4 on [0, 1] frames (different
convolution kernels), so exact ``fp32`` renders never use it.

When compilation is impossible (no C++ compiler, an unsupported platform or build) the first
call fails; the render then goes on eagerly, with one warning per process.
"""

from __future__ import annotations

import functools
import logging
import shutil
import threading
from collections.abc import Callable

import torch
from torch import nn

from ..options import option_of
from .conv import winograd

log = logging.getLogger(__name__)

# Clips shorter than this (10 s at 25 fps) render eagerly under ``auto``: at 0.2 s (fp32) and
# 0.06 s (bf16) saved per 256 frame on a 2-core CPU, a 15-25 s compilation pays back after
# about 120 (fp32) and 250 (bf16) frames.
MIN_FRAMES = 250
_ATTR = "_sadtalker_compiled"  # the compiled decoder lives on the module it was made from

_lock = threading.Lock()
_failed: list[str] = []  # why compilation failed in this process (then never retried)


def wanted(mode: str, device: torch.device, precision: str, frames: int) -> bool:
    """Whether a render of ``frames`` frames should use the compiled decoder.

    Args:
        mode: ``auto`` (AVX-512 CPUs, clips of ``MIN_FRAMES`` or more), ``on`` (any device and
            length) or ``off``.
        device: where the generator runs.
        precision: the requested precision (``fp32``, the exact mode, is never compiled).
        frames: frames in the clip.
    """
    option_of("render", "compile").check(mode)
    if mode == "off" or precision == "fp32" or _failed:
        return False
    if mode == "on":
        return True
    return (
        device.type == "cpu"
        and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
        and frames >= MIN_FRAMES
        and compiler_found()
    )


@functools.cache
def compiler_found() -> bool:
    """Whether a C++ compiler inductor can use is on PATH (without one ``auto`` does not try)."""
    return any(shutil.which(c) for c in ("g++", "c++", "clang++", "cl"))


def _key(module: nn.Module, precision: str, shape: tuple[int, ...]) -> tuple:
    """What a compiled decoder depends on: its weights (storage and version: moved or reloaded
    weights give a new key), the precision and the input shape (compiled for one shape)."""
    params = tuple((p.data_ptr(), p._version) for p in module.parameters())
    return (precision, shape, torch.is_autocast_enabled(), params)


def decoder(module: nn.Module, precision: str, shape: tuple[int, ...]) -> Callable:
    """``module`` compiled for inputs of ``shape`` (batch, height, width) under the caller's
    autocast state; the eager
    module where compilation failed before. One compiled copy is kept per module (it holds the
    frozen weights): a new shape, precision or weight replaces it."""
    key = _key(module, precision, shape)
    with _lock:
        held = module.__dict__.get(_ATTR)
        if held is not None and held[0] == key:
            return held[1]
        compiled = torch.compile(module, dynamic=False, options={"freezing": True})
        fn = _Guarded(module, compiled)
        module.__dict__[_ATTR] = (key, fn)  # not a submodule: not in state_dict, not moved
        return fn


def release(module: nn.Module) -> None:
    """Drop the compiled copy of ``module`` (and the frozen weights it holds)."""
    module.__dict__.pop(_ATTR, None)


class _Guarded:
    """Calls the compiled module; if compiling fails, warns once and runs the eager one."""

    def __init__(self, eager: nn.Module, compiled: Callable):
        self.eager = eager
        self.compiled = compiled

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if _failed:
            return self.eager(x)
        try:
            with winograd(False):  # the compiled graph has its own convolution kernels
                return self.compiled(x)
        except Exception as e:  # noqa: BLE001 - any compiler failure: render eagerly instead
            if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower():
                raise  # the caller halves the batch
            _failed.append(f"{type(e).__name__}: {e}")
            release(self.eager)
            log.warning(
                "torch.compile is not available here (%s); rendering without it. "
                "Set compile to 'off' to skip the attempt.",
                str(e).splitlines()[0][:200] if str(e) else type(e).__name__,
            )
            return self.eager(x)
