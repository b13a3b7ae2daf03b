"""Background upscaling: Real-ESRGAN x2plus (official container) and any spandrel upscaler through
spandrel, tiled with the official rule; faces pasted onto the upscaled frame."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from sadtalker_core.enhance.landmarks import FACE_TEMPLATE
from sadtalker_core.enhance.restore import EnhanceConfig, FaceEnhancer
from sadtalker_core.enhance.upscale import (
    REALESRGAN_FILE,
    BackgroundUpscaler,
    load_upscaler,
    resolve_background,
)
from sadtalker_core.errors import ModelNotFoundError, UnsupportedCheckpointError
from sadtalker_core.io.frames import to_uint8
from sadtalker_core.models import FILES as ENHANCE_FILES


def rrdb_state_dict(feat: int = 16, grow: int = 32, blocks: int = 1, seed: int = 0) -> dict:
    """A small Real-ESRGAN x2 (pixel-unshuffle) RRDBNet state dict, basicsr key names, seeded
    values at unit gain: cheap on CPU, same layer types as RealESRGAN_x2plus."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"conv_first": (feat, 12)}
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                out = feat if c == 5 else grow
                shapes[f"body.{b}.rdb{r}.conv{c}"] = (out, feat + (c - 1) * grow)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (feat, feat)
    shapes["conv_last"] = (3, feat)
    sd = {}
    for name, (o, i) in shapes.items():
        sd[f"{name}.weight"] = torch.randn(o, i, 3, 3, generator=g) / (3 * i**0.5)
        sd[f"{name}.bias"] = 0.01 * torch.randn(o, generator=g)
    return sd


@pytest.fixture(scope="module")
def small_x2(tmp_path_factory):
    """A small x2 upscaler saved as ``{'params_ema': ...}`` and loaded by our spandrel path."""
    path = tmp_path_factory.mktemp("small") / "small_x2.pth"
    torch.save({"params_ema": rrdb_state_dict()}, path)
    return load_upscaler(path, "cpu")


def test_the_official_file_loads_as_a_x2_esrgan(realesrgan_file):
    desc = load_upscaler(realesrgan_file, "cpu")
    assert desc.architecture.id == "ESRGAN" and desc.scale == 2
    assert sum(p.numel() for p in desc.model.parameters()) == pytest.approx(16.7e6, rel=0.01)
    up = BackgroundUpscaler(desc, tile=8, tile_pad=10)
    x = torch.rand(2, 3, 19, 14, generator=torch.Generator().manual_seed(0))
    y = up(x)
    assert y.shape == (2, 3, 38, 28) and y.dtype == torch.float32  # 19 x 14 px * 2
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert ENHANCE_FILES[REALESRGAN_FILE].url.endswith("/v0.2.1/RealESRGAN_x2plus.pth")


@pytest.mark.parametrize("hw", [(71, 85), (64, 96)])
def test_tiled_equals_untiled_on_a_frame_larger_than_a_tile(small_x2, hw):
    # The context of each tile (40 px) covers the network's receptive field (1 RRDB block:
    # about 19 px at half resolution = 38 input px), so the cut must be invisible; odd sizes go
    # through the mirror padding to a multiple of 2.
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(1))
    whole = BackgroundUpscaler(small_x2, tile=0)(x)
    tiled = BackgroundUpscaler(small_x2, tile=32, tile_pad=40)(x)  # 3 x 3 tiles
    assert whole.shape == (2, 3, hw[0] * 2, hw[1] * 2)
    torch.testing.assert_close(tiled, whole, atol=1e-4, rtol=0)
    # the official context (10 px) is smaller than that field: seams, but small ones
    official = BackgroundUpscaler(small_x2, tile=32, tile_pad=10)(x)
    assert 0 < float((official - whole).abs().max()) < 0.5


def test_output_is_resized_to_the_requested_scale(small_x2):
    x = torch.rand(1, 3, 30, 25, generator=torch.Generator().manual_seed(2))
    up = BackgroundUpscaler(small_x2, tile=16, tile_pad=4)
    assert up(x, 1).shape == (1, 3, 30, 25)
    assert up(x, 3).shape == (1, 3, 90, 75)
    assert up(x, 2).shape == (1, 3, 60, 50)


def test_unknown_background_names_the_file_and_the_fix(tmp_path, restorer_dir):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_background("realesrgan", [tmp_path])
    assert REALESRGAN_FILE in str(e.value) and ENHANCE_FILES[REALESRGAN_FILE].url in str(e.value)
    with pytest.raises(ModelNotFoundError, match="any model spandrel loads"):
        resolve_background(str(tmp_path / "nope.pth"), [tmp_path])
    with pytest.raises(UnsupportedCheckpointError, match="RestoreFormer, a face restoration"):
        BackgroundUpscaler.from_name(str(restorer_dir / "RestoreFormer.pth"), [], "cpu")
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(UnsupportedCheckpointError, match="junk.pth"):
        BackgroundUpscaler.from_name(str(tmp_path / "junk.pth"), [], "cpu")
    with pytest.raises(TypeError, match="ImageModelDescriptor"):
        BackgroundUpscaler(torch.nn.Identity())


def test_enhancer_upscales_the_background_from_the_config(restorer_dir, realesrgan_file, tmp_path):
    os.symlink(restorer_dir / "GFPGANv1.4.pth", tmp_path / "GFPGANv1.4.pth")
    os.symlink(realesrgan_file, tmp_path / REALESRGAN_FILE)
    cfg = EnhanceConfig(upscale=2, background="realesrgan", background_tile=16)
    enh = FaceEnhancer(tmp_path, "cpu", cfg)
    assert enh.background is not None and enh.background.scale == 2
    frames = np.random.default_rng(0).integers(0, 256, (1, 20, 24, 3), dtype=np.uint8)
    no_face = [np.zeros((0, 5, 2), np.float32)]  # known: no face, nothing to detect
    out = enh.enhance(frames, landmarks=no_face)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    assert np.array_equal(out, to_uint8(enh.background(x, 2)))
    assert out.shape == (1, 40, 48, 3)


class _DotRestorer(FaceEnhancer):
    """Restored face = black with a white dot on each of the five template points."""

    def restore(self, faces: torch.Tensor) -> torch.Tensor:
        yy, xx = torch.meshgrid(torch.arange(512.0), torch.arange(512.0), indexing="ij")
        dots = sum(
            torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 6.0**2)) for x, y in FACE_TEMPLATE
        )
        return dots.clamp(0, 1).expand(faces.shape[0], 3, 512, 512).clone()


@pytest.mark.parametrize("up", [2, 3])
def test_pasted_face_lands_on_its_landmarks_in_the_upscaled_frame(restorer_dir, small_x2, up):
    enh = _DotRestorer(restorer_dir, "cpu", EnhanceConfig(upscale=up), background=small_x2)
    a = np.deg2rad(-11.0)
    rot = 0.35 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = (FACE_TEMPLATE @ rot.T + np.array([-3.0, 7.5])).astype(np.float32)  # frame pixels
    frame = np.full((1, 160, 150, 3), 90, np.uint8)
    out = enh.enhance_tensor(torch.from_numpy(frame).permute(0, 3, 1, 2) / 255, pts[None])[0, 0]
    assert out.shape == (160 * up, 150 * up)
    expected = (pts + 0.5) * up - 0.5  # the same points in pixels of the enlarged frame
    for ex, ey in expected:
        x0, y0 = round(ex) - 4 * up, round(ey) - 4 * up
        win = out[y0 : y0 + 8 * up + 1, x0 : x0 + 8 * up + 1].double()
        w = (win - win.min()).clamp_min(0) ** 2
        yy, xx = torch.meshgrid(
            torch.arange(win.shape[0]), torch.arange(win.shape[1]), indexing="ij"
        )
        cx, cy = float((w * xx).sum() / w.sum()) + x0, float((w * yy).sum() / w.sum()) + y0
        assert abs(cx - ex) < 1 and abs(cy - ey) < 1, (cx, cy, ex, ey)
