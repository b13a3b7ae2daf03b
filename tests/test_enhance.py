"""Enhance stage: GFPGAN v1.4 / RestoreFormer on every face of rendered frames (spandrel networks,
official checkpoint containers with seeded random values, real faces found by dlib)."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sadtalker_core.enhance.restore import (
    FACE_TEMPLATE,
    EnhanceConfig,
    FaceEnhancer,
    alignment,
    five_points,
    load_restorer,
)
from sadtalker_core.errors import ModelNotFoundError, UnsupportedCheckpointError
from sadtalker_core.io.image import load_image
from sadtalker_core import models as registry


@pytest.fixture(scope="module")
def frame(fixtures_dir) -> np.ndarray:
    """A rendered-frame-sized portrait: people_0 at 237x237 (odd on purpose)."""
    rgb = load_image(fixtures_dir / "people_0.png").rgb
    return cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def gfpgan(restorer_dir) -> FaceEnhancer:
    return FaceEnhancer(restorer_dir, "cpu", EnhanceConfig(detector="dlib"))


def bicubic(frames: np.ndarray, up: int) -> np.ndarray:
    """The enhancer's background: antialias-free bicubic enlargement, rounded to uint8."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    y = F.interpolate(x, scale_factor=up, mode="bicubic", align_corners=False).clamp(0, 1)
    return (y * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def face_footprint(enhancer: FaceEnhancer, frame: np.ndarray, up: int) -> np.ndarray:
    """Boolean (H*up, W*up) map of the pixels inside the aligned 512 crop of the frame's faces."""
    mask = np.zeros((frame.shape[0] * up, frame.shape[1] * up), np.uint8)
    for m in enhancer.face_alignments(frame):
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0], [512, 0], [512, 512], [0, 512]], np.float64) - 0.5
        pts = ((corners @ inv[:, :2].T + inv[:, 2]) + 0.5) * up - 0.5
        cv2.fillConvexPoly(mask, np.round(pts).astype(np.int32), 1)
    return mask.astype(bool)


def test_checkpoints_are_the_official_containers(restorer_dir):
    gfp = torch.load(restorer_dir / "GFPGANv1.4.pth", weights_only=True, mmap=True)
    assert list(gfp) == ["params_ema"] and "toRGB.0.weight" in gfp["params_ema"]
    for name in ("GFPGANv1.4.pth", "RestoreFormer.pth"):
        assert registry.validate_file(restorer_dir / name, registry.FILES[name]) == ""
    model = load_restorer(restorer_dir / "GFPGANv1.4.pth", "GFPGAN", "cpu")
    assert type(model).__name__ == "GFPGANv1Clean" and not model.training
    assert load_restorer(restorer_dir / "GFPGANv1.4.pth", "GFPGAN", "cpu") is model  # cached


def test_five_points_and_alignment_of_a_template_face():
    # 68 landmarks whose eyes, nose tip and mouth corners sit exactly on the 512 template, moved
    # by a known similarity: the fitted transform must undo it.
    lm = np.zeros((68, 2), np.float32)
    lm[36:42], lm[42:48] = FACE_TEMPLATE[0], FACE_TEMPLATE[1]
    lm[30], lm[48], lm[54] = FACE_TEMPLATE[2], FACE_TEMPLATE[3], FACE_TEMPLATE[4]
    angle, scale, shift = np.deg2rad(12), 0.4, np.array([30.0, -12.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = lm @ rot.T + shift
    pts = five_points(moved)
    np.testing.assert_allclose(pts, FACE_TEMPLATE @ rot.T + shift, atol=1e-3)
    m = alignment(pts)
    np.testing.assert_allclose(pts @ m[:, :2].T + m[:, 2], FACE_TEMPLATE, atol=1e-2)


def test_gfpgan_restores_the_face_and_enlarges_the_frame(gfpgan, frame):
    batch = np.stack([frame, frame[:, ::-1].copy()])
    out = gfpgan.enhance(batch)
    assert out.shape == (2, 474, 474, 3) and out.dtype == np.uint8
    assert np.array_equal(gfpgan.enhance(batch), out)  # fixed noise: same input, same frames
    plain = bicubic(batch, 2)
    face = face_footprint(gfpgan, frame, 2)
    assert 0.05 < face.mean() < 0.6
    diff = np.abs(out[0].astype(int) - plain[0].astype(int)).max(-1)
    # outside the crop footprint the frame is the enlarged input, untouched
    assert diff[~face].max() == 0
    # the restored face replaces the middle of the footprint
    inner = cv2.erode(face.astype(np.uint8), np.ones((61, 61), np.uint8)).astype(bool)
    assert inner.any() and (diff[inner] > 8).mean() > 0.5


def test_frames_without_a_face_are_only_resized(gfpgan):
    flat = np.full((1, 96, 80, 3), 120, np.uint8)
    flat[0, 20:40, 10:30] = 200  # some structure, still no face
    assert np.array_equal(gfpgan.enhance(flat), bicubic(flat, 2))


class _IdentityRestorer(FaceEnhancer):
    """Returns the aligned crops unchanged: the round trip tests the warp and paste geometry."""

    def restore(self, faces: torch.Tensor) -> torch.Tensor:
        return faces


@pytest.mark.parametrize("up", [1, 2])
def test_align_and_paste_back_round_trip(restorer_dir, frame, up):
    ident = _IdentityRestorer(restorer_dir, "cpu", EnhanceConfig(detector="dlib", upscale=up))
    out = ident.enhance(frame[None])[0].astype(float)
    ref = bicubic(frame[None], up)[0].astype(float)
    face = face_footprint(ident, frame, up)
    err = np.abs(out - ref).mean(-1)[face]
    # two bilinear resamplings blur a little (measured: mean 0.45 / 0.92, 99th percentile 4.7 /
    # 8.3 levels at upscale 1 / 2); the paste shifted by half an output pixel gives 2.8 / 1.7
    # and 25 / 15, so these bounds catch any misplacement of the pixel grid
    assert err.mean() < 1.4 and np.percentile(err, 99) < 12, (err.mean(), np.percentile(err, 99))


def test_restoreformer(restorer_dir, frame):
    small = cv2.resize(frame, (160, 160), interpolation=cv2.INTER_AREA)
    enh = FaceEnhancer(restorer_dir, "cpu", EnhanceConfig("RestoreFormer", 1, "dlib"))
    out = enh.enhance(small[None])
    assert out.shape == (1, 160, 160, 3)
    assert np.abs(out.astype(int) - small.astype(int)).max(-1).mean() > 2  # the face changed


def test_missing_restorer_names_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        FaceEnhancer(tmp_path, "cpu", EnhanceConfig(detector="dlib"))
    msg = str(e.value)
    assert "GFPGANv1.4.pth" in msg and registry.FILES["GFPGANv1.4.pth"].url in msg
    assert str(tmp_path) in msg


def test_wrong_network_under_the_restorer_name(restorer_dir, tmp_path):
    shutil.copyfile(restorer_dir / "RestoreFormer.pth", tmp_path / "GFPGANv1.4.pth")
    with pytest.raises(UnsupportedCheckpointError, match="RestoreFormer network, not GFPGAN"):
        FaceEnhancer(tmp_path, "cpu", EnhanceConfig(detector="dlib"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"enhancer": "codeformer"}, "enhancer must be one of gfpgan, RestoreFormer"),
        ({"upscale": 8}, "upscale must be 1, 2, 3 or 4"),
        ({"detector": "mtcnn"}, "detector must be auto or one of"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_config_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EnhanceConfig(**kwargs)
