"""Enhance stage: GFPGAN v1.4 / RestoreFormer on every face of rendered frames (spandrel networks,
official checkpoint containers with seeded random values, real faces found by dlib)."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sadtalker_core import models as registry
from sadtalker_core.enhance.landmarks import source_landmarks_in_frames, track_landmarks
from sadtalker_core.enhance.restore import (
    FACE_TEMPLATE,
    EnhanceConfig,
    FaceEnhancer,
    alignment,
    five_points,
    load_restorer,
)
from sadtalker_core.errors import ModelNotFoundError, ShapeError, UnsupportedCheckpointError
from sadtalker_core.face.detect import detect_faces
from sadtalker_core.io.image import load_image
from sadtalker_core.types import Face


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


def _face_with_landmarks(preprocess: str, size: int = 256) -> Face:
    """A Face whose landmarks are the 512 template's points spread over a 68-point layout,
    placed in a 400 x 360 picture; only the geometry fields matter here."""
    from sadtalker_core.face.align import compute_crop_info

    rng = np.random.default_rng(3)
    lm = np.zeros((68, 2), np.float32)
    lm[:] = FACE_TEMPLATE[2] + rng.normal(0, 60, (68, 2))  # jaw, brows...: around the nose
    lm[36:42], lm[42:48] = FACE_TEMPLATE[0], FACE_TEMPLATE[1]
    lm[30], lm[48], lm[54] = FACE_TEMPLATE[2], FACE_TEMPLATE[3], FACE_TEMPLATE[4]
    lm = lm * 0.4 + np.array([110.0, 80.0], np.float32)
    image = np.zeros((360, 400, 3), np.uint8)
    info = None
    if preprocess != "resize":
        info = compute_crop_info(lm, (400, 360), extended=preprocess.startswith("ext"))
    z = np.zeros(1, np.float32)
    return Face(image, None, image[:size, :size], info, lm, z, z, z, preprocess, size)


@pytest.mark.parametrize("preprocess", ["crop", "extcrop", "resize", "full"])
def test_known_landmarks_map_into_the_frames(preprocess):
    face = _face_with_landmarks(preprocess)
    pasted = preprocess == "full"
    if pasted:  # pasted frames are the picture: the landmarks stay where they were
        lm = source_landmarks_in_frames(face, (360, 400), True)
        np.testing.assert_allclose(lm, face.landmarks, atol=1.0)  # the paste box is rounded
        lm2 = source_landmarks_in_frames(face, (720, 800), True)
        np.testing.assert_allclose(lm2, (face.landmarks + 0.5) * 2 - 0.5, atol=2.0)
        return
    x0, y0, x1, y1 = (
        (0, 0, 400, 360) if face.crop_info is None else face.crop_info.image_box_original
    )
    hw = (int(256 * (y1 - y0) / (x1 - x0)), 256)  # face frames: width 256, the box's aspect
    lm = source_landmarks_in_frames(face, hw, False)
    expect = (face.landmarks + 0.5 - [x0, y0]) * [hw[1] / (x1 - x0), hw[0] / (y1 - y0)] - 0.5
    np.testing.assert_allclose(lm, expect, atol=1e-3)


def test_landmarks_follow_the_renderer_keypoints():
    face = _face_with_landmarks("crop")
    rng = np.random.default_rng(4)
    kp_source = rng.uniform(-0.6, 0.6, (1, 15, 3))
    # three frames: still, turned 10 degrees and moved, scaled; x, y of the keypoints only
    moves = [(0.0, 1.0, (0.0, 0.0)), (10.0, 1.0, (0.05, -0.02)), (-4.0, 1.1, (0.0, 0.03))]
    kp_driving = np.repeat(kp_source, 3, 0)
    mats = []
    for k, (deg, s, t) in enumerate(moves):
        a = np.deg2rad(deg)
        m = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        kp_driving[k, :, :2] = kp_source[0, :, :2] @ m.T + t
        mats.append((m, np.array(t)))
    hw = (256, 256)
    lm = track_landmarks(face, torch.from_numpy(kp_source), kp_driving, hw, False)
    assert lm.shape == (3, 68, 2) and lm.dtype == np.float32
    still = source_landmarks_in_frames(face, hw, False)
    np.testing.assert_allclose(lm[0], still, atol=1e-3)
    for k, (m, t) in enumerate(mats):
        n = (still + 0.5) * 2 / 256 - 1  # render pixels -> normalised
        expect = ((n @ m.T + t) + 1) * 128 - 0.5
        np.testing.assert_allclose(lm[k], expect, atol=1e-3)


def test_given_landmarks_skip_the_detector(restorer_dir, frame, monkeypatch):
    enh = _IdentityRestorer(restorer_dir, "cpu", EnhanceConfig(detector="dlib", upscale=1))
    found = enh.face_alignments(frame)  # detector once, for reference points
    pts = [five_points(f.landmarks) for f in detect_faces(frame, enh.detector)]
    monkeypatch.setattr(FaceEnhancer, "face_alignments", lambda *a: pytest.fail("detected"))
    given = enh.enhance(frame[None], landmarks=[np.stack(pts)])
    monkeypatch.undo()
    assert len(found) == 1 and np.array_equal(given, enh.enhance(frame[None]))
    with pytest.raises(ShapeError, match="landmarks for 2 frames; the batch has 1"):
        enh.enhance(frame[None], landmarks=[pts[0], pts[0]])
    with pytest.raises(ShapeError, match=r"must be \(68, 2\) or \(5, 2\)"):
        enh.enhance(frame[None], landmarks=[np.zeros((7, 2))])
