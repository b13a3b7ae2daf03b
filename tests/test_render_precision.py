"""Render stage robustness: the out-of-memory batch-halving retry (simulated error) and every
precision path (run where the device allows it; on CPU the documented fallback)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from sadtalker_core.config import PRECISIONS
from sadtalker_core.render.infer import RenderConfig, resolve_precision

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FRAMES = 4
RENDER_DEVICE = DEVICE  # the renderer fixture's device (conftest.py)


@pytest.fixture(scope="module")
def clip(golden):
    g = golden("facerender_e2e")
    coeffs = np.concatenate([g["coeffs"]] * 2)[:FRAMES]  # a few frames are enough
    return torch.from_numpy(g["source_image"][:1]), g["first_coeff"][0, :70], coeffs


def _render(renderer, clip, batch_size=FRAMES, precision="fp32"):
    source, first, coeffs = clip
    cfg = RenderConfig(batch_size=batch_size, precision=precision)
    batches = list(renderer.stream(source, first, coeffs, cfg))
    return batches, torch.cat(batches).float().cpu()


@pytest.fixture(scope="module")
def exact(renderer, clip):
    return _render(renderer, clip, batch_size=1)[1]


@pytest.fixture(scope="module")
def fp32_batch2(renderer, clip):
    """Exact fp32 at batch size 2, rendered once for every precision that falls back to it."""
    return _render(renderer, clip, batch_size=2, precision="fp32")[1]


class _OOMAbove:
    """Wraps ``generator.animate``: raises the device's out-of-memory error for batches larger
    than ``limit`` frames, as a GPU without enough free memory does."""

    def __init__(self, generator, limit: int, error=torch.OutOfMemoryError):
        self.real, self.limit, self.error, self.sizes = generator.animate, limit, error, []

    def __call__(self, feature, kp_source, kp_driving, decoder=None):
        n = kp_driving["value"].shape[0] if isinstance(kp_driving, dict) else len(kp_driving)
        self.sizes.append(n)
        if n > self.limit:
            raise self.error(f"CUDA out of memory. Tried to allocate {n} GiB")
        return self.real(feature, kp_source, kp_driving, decoder)


def test_out_of_memory_halves_the_batch_and_keeps_every_frame(
    renderer, clip, exact, monkeypatch, caplog
):
    gen = renderer.models.generator
    oom = _OOMAbove(gen, limit=1)
    monkeypatch.setattr(gen, "animate", oom)
    with caplog.at_level(logging.WARNING, logger="sadtalker_core.render.infer"):
        batches, frames = _render(renderer, clip, batch_size=4)
    assert oom.sizes[:3] == [4, 2, 1]  # 4 -> 2 -> 1, then it stays at 1
    assert [b.shape[0] for b in batches] == [1] * FRAMES
    assert "out of memory at batch size 4; retrying with 2" in caplog.text
    torch.testing.assert_close(frames, exact, rtol=0, atol=0)


def test_out_of_memory_at_batch_one_is_raised(renderer, clip, monkeypatch):
    gen = renderer.models.generator
    monkeypatch.setattr(gen, "animate", _OOMAbove(gen, limit=0))
    with pytest.raises(torch.OutOfMemoryError):
        _render(renderer, clip, batch_size=2)


def test_other_errors_are_not_retried(renderer, clip, monkeypatch):
    gen = renderer.models.generator
    wrapped = _OOMAbove(gen, limit=0, error=RuntimeError)
    monkeypatch.setattr(gen, "animate", wrapped)
    with pytest.raises(RuntimeError, match="Tried to allocate"):
        _render(renderer, clip, batch_size=2)  # "out of memory" is in the text: still an OOM
    wrapped.error = lambda msg: ValueError("shape mismatch")
    wrapped.sizes.clear()
    with pytest.raises(ValueError, match="shape mismatch"):
        _render(renderer, clip, batch_size=4)
    assert wrapped.sizes == [4]  # no retry


def test_precision_names():
    assert PRECISIONS == ("auto", "fp32", "tf32", "bf16", "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        RenderConfig(precision="int8")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda) == "tf32" and resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("tf32", cuda) == "tf32" and resolve_precision("tf32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("fp16", cpu) == "fp32" and resolve_precision("fp16", cuda) == "fp16"


# (precision, max abs, mean abs) deviation from exact fp32 over the frames in [0, 1]
BOUNDS = {"auto": (2e-3, 1e-4), "tf32": (2e-2, 1e-3), "bf16": (0.25, 0.03), "fp16": (0.1, 0.01)}


@pytest.mark.parametrize("precision", ["auto", "tf32", "bf16", "fp16"])
def test_every_precision_renders_close_to_fp32(renderer, clip, exact, precision, request, caplog):
    with caplog.at_level(logging.WARNING, logger="sadtalker_core.render.infer"):
        batches, frames = _render(renderer, clip, batch_size=2, precision=precision)
    assert frames.shape == exact.shape and frames.dtype == torch.float32
    assert torch.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    err = (frames - exact).abs()
    max_abs, mean_abs = BOUNDS[precision]
    assert err.max() <= max_abs and err.mean() <= mean_abs, (err.max(), err.mean())
    if resolve_precision(precision, DEVICE) == "fp32":  # the documented fallback: exact fp32
        fp32 = request.getfixturevalue("fp32_batch2")
        torch.testing.assert_close(frames, fp32, rtol=0, atol=0)
    elif precision in ("bf16", "fp16"):
        assert err.max() > 0  # the reduced precision really ran


def test_tf32_switches_are_shared_by_concurrent_renders():
    """Workers on several GPUs render at once: the host's TF32 switches are saved by the first
    render in and restored only when the last one leaves (not half-way through another's)."""
    from sadtalker_core.render.infer import _tf32

    switches = (torch.backends.cudnn, torch.backends.cuda.matmul)
    host = [s.allow_tf32 for s in switches]
    try:
        for s in switches:
            s.allow_tf32 = False  # the host's choice
        first, second = _tf32(True), _tf32(True)
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)  # one worker finished: the other still renders in TF32
        assert all(s.allow_tf32 for s in switches)
        second.__exit__(None, None, None)
        assert not any(s.allow_tf32 for s in switches)  # the host's values are back
    finally:
        for s, value in zip(switches, host):
            s.allow_tf32 = value
