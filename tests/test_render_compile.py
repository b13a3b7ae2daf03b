"""The compiled SPADE decoder (torch.compile, inductor, frozen weights): when ``auto`` uses it,
that its frames stay within the goldens' tolerances, how a render uses it batch by batch, and
the eager fallback when compilation really fails (no working C++ compiler)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch._inductor.config as inductor_config

from sadtalker_core.config import RenderConfig
from sadtalker_core.render import compiled
from sadtalker_core.render.spade import SPADEDecoder, SPADEDecoderConfig

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh_failure_state(monkeypatch):
    """Each test starts as a new process would: no compilation failure recorded."""
    monkeypatch.setattr(compiled, "_failed", [])


@pytest.mark.parametrize(
    ("mode", "device", "precision", "frames", "capability", "want"),
    [
        ("auto", "cpu", "auto", 250, "AVX512", True),
        ("auto", "cpu", "bf16", compiled.MIN_FRAMES, "AVX512_BF16", True),
        ("auto", "cpu", "auto", compiled.MIN_FRAMES - 1, "AVX512", False),  # too short to pay
        ("auto", "cpu", "auto", 250, "AVX2", False),  # AVX2 CPUs keep the Winograd path
        ("auto", "cuda", "auto", 250, "AVX512", False),  # unmeasured on GPUs: not automatic
        ("auto", "cpu", "fp32", 250, "AVX512", False),  # exact fp32 is never compiled
        ("on", "cpu", "auto", 1, "AVX2", True),
        ("on", "cuda", "fp16", 1, "AVX2", True),
        ("on", "cpu", "fp32", 250, "AVX512", False),
        ("off", "cpu", "auto", 250, "AVX512", False),
    ],
)
def test_when_the_decoder_is_compiled(
    monkeypatch, mode, device, precision, frames, capability, want
):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(compiled, "compiler_found", lambda: True)
    assert compiled.wanted(mode, torch.device(device), precision, frames) is want


def test_auto_does_not_try_without_a_compiler_or_after_a_failure(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(compiled, "compiler_found", lambda: False)
    assert not compiled.wanted("auto", CPU, "auto", 1000)
    monkeypatch.setattr(compiled, "compiler_found", lambda: True)
    monkeypatch.setattr(compiled, "_failed", ["InvalidCxxCompiler"])
    assert not compiled.wanted("auto", CPU, "auto", 1000)
    assert not compiled.wanted("on", CPU, "auto", 1000)
    with pytest.raises(ValueError, match="compile must be one of auto, on, off"):
        compiled.wanted("yes", CPU, "auto", 1000)
    with pytest.raises(ValueError, match="compile must be one of"):
        RenderConfig(compile="always")


def _tiny_decoder() -> SPADEDecoder:
    torch.manual_seed(0)
    cfg = SPADEDecoderConfig(in_channels=16, out_channels=8, hidden=8, num_middle=1)
    return SPADEDecoder(cfg).eval()


def test_failed_compilation_falls_back_to_eager_once(monkeypatch, caplog):
    """A real inductor failure (the configured C++ compiler does not exist): the frames come
    from the eager decoder, one warning names the cause, and nothing is compiled again."""
    decoder = _tiny_decoder()
    x = torch.rand(1, 16, 8, 8)
    patch = {"cpp.cxx": ("/nonexistent/g++",), "force_disable_caches": True}
    with (
        inductor_config.patch(patch),
        torch.inference_mode(),
        caplog.at_level(logging.WARNING, "sadtalker_core.render.compiled"),
    ):
        fn = compiled.decoder(decoder, "auto", (1, 8, 8))
        got = fn(x)
        again = fn(x)
        want = decoder(x)
    assert torch.equal(got, want) and torch.equal(again, want)
    warnings = [r.getMessage() for r in caplog.records if r.name == compiled.log.name]
    assert len(warnings) == 1 and "No working C++ compiler" in warnings[0]
    assert "rendering without it" in warnings[0]
    assert compiled._failed and not compiled.wanted("on", CPU, "auto", 10)
    assert compiled._ATTR not in decoder.__dict__  # the failed copy is dropped


def test_compiled_copy_follows_weight_changes_and_is_released():
    decoder = _tiny_decoder()
    x = torch.rand(1, 16, 8, 8)
    with torch.inference_mode():
        fn = compiled.decoder(decoder, "auto", (1, 8, 8))
        assert compiled.decoder(decoder, "auto", (1, 8, 8)) is fn  # reused
        before = fn(x)
        torch.testing.assert_close(before, decoder(x), atol=1e-4, rtol=0)
    with torch.no_grad():
        decoder.conv_img.bias.add_(0.5)  # weights reloaded in place: a new version
    with torch.inference_mode():
        fn2 = compiled.decoder(decoder, "auto", (1, 8, 8))
        after = fn2(x)
        assert fn2 is not fn
        torch.testing.assert_close(after, decoder(x), atol=1e-4, rtol=0)
        assert not torch.allclose(after, before)
    compiled.release(decoder)
    assert compiled._ATTR not in decoder.__dict__
    assert all(not k.startswith("_sadtalker") for k in decoder.state_dict())


def test_compiled_render_matches_eager_within_the_goldens_tolerance(renderer, golden):
    """Three frames at batch 2: the first batch runs the compiled decoder, the shorter last one
    the eager decoder; every frame stays within 1e-3 of the eager render (the goldens allow
    2e-3) and the compiled frames really come from other kernels."""
    g = golden("facerender_e2e")
    source = torch.from_numpy(g["source_image"][:1])
    first, rows = g["first_coeff"][0, :70], np.concatenate([g["coeffs"]] * 2)[:3]
    runs = {}
    for mode in ("off", "on"):
        cfg = RenderConfig(batch_size=2, precision="auto", compile=mode)
        runs[mode] = torch.cat(list(renderer.stream(source, first, rows, cfg)))
    assert runs["on"].shape == runs["off"].shape == (3, 3, 256, 256)
    deviation = (runs["on"] - runs["off"]).abs()
    assert deviation.max() < 1e-3
    assert deviation[:2].max() > 0  # compiled batch
    assert torch.equal(runs["on"][2:], runs["off"][2:])  # the last, shorter batch: eager
    assert compiled._ATTR in renderer.models.generator.decoder.__dict__  # kept on CPU
