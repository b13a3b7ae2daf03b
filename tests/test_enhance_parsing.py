"""Face-parsing paste mask: our ParseNet against facexlib's on the same official-format weights,
the official mask rule on a synthetic label map, and the mask used when pasting faces back."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sadtalker_core.enhance import restore
from sadtalker_core.enhance.landmarks import FACE_TEMPLATE
from sadtalker_core.enhance.parsing import (
    FACE_LABELS,
    PARSENET_FILE,
    ParseNet,
    load_parsenet,
    mask_from_labels,
    parse_masks,
)
from sadtalker_core.enhance.restore import EnhanceConfig, FaceEnhancer
from sadtalker_core.errors import UnsupportedCheckpointError
from sadtalker_core.models import FILES as ENHANCE_FILES

REFERENCE = Path(os.environ.get("SADTALKER_SHARED", Path(__file__).parents[2] / "shared"))
REFERENCE = REFERENCE / "reference"


def generate(name: str, dest: Path) -> Path:
    """``name`` written once by the reference make_weights.py (official container) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    target, stamp = dest / name, dest / f".{name}.generated-v1"
    with open(dest / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target.exists() and stamp.exists()):
            spec = importlib.util.spec_from_file_location("mw", REFERENCE / "make_weights.py")
            mw = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mw)
            meta, arrays = mw.generate(str(REFERENCE / "keys" / f"{name}.tsv"))
            (dest / ".tmp").mkdir(exist_ok=True)
            mw.save(meta, arrays, str(dest / ".tmp" / name))  # torch.save embeds the stem
            os.replace(dest / ".tmp" / name, target)
            stamp.touch()
    return target


@pytest.fixture(scope="module")
def parsenet_file() -> Path:
    default = Path.home() / ".cache" / "sadtalker_core" / "test-enhance-extras"
    return generate(PARSENET_FILE, Path(os.environ.get("SADTALKER_TEST_EXTRAS", default)))


@pytest.fixture(scope="module")
def parsenet(parsenet_file) -> ParseNet:
    return load_parsenet(parsenet_file, "cpu")


def test_the_official_container_loads_strictly(parsenet_file, parsenet):
    sd = torch.load(parsenet_file, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())  # a bare state dict
    assert len(sd) == 238 and set(parsenet.state_dict()) == set(sd)
    assert not parsenet.training
    assert ENHANCE_FILES[PARSENET_FILE].url.endswith("/v0.2.2/parsing_parsenet.pth")


def test_matches_facexlib_parsenet(parsenet_file, parsenet):
    from facexlib.parsing.parsenet import ParseNet as FacexlibParseNet

    ref = FacexlibParseNet(in_size=512, out_size=512, parsing_ch=19)
    ref.load_state_dict(torch.load(parsenet_file, weights_only=True), strict=True)
    ref.eval()
    # fully convolutional: a 128 px input keeps the CPU time small (the official runs 512)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        logits, image = parsenet(x, with_image=True)
        ref_logits, ref_image = ref(x)
    assert logits.shape == (2, 19, 128, 128)
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(image, ref_image, atol=1e-4, rtol=0)


def official_mask(labels: np.ndarray) -> np.ndarray:
    """The mask rule as facexlib states it, in numpy/cv2 (float64, 0..255 then /255)."""
    colormap = [0, *[255] * 13, 0, 255, 0, 0, 0]
    mask = np.zeros(labels.shape)
    for idx, color in enumerate(colormap):
        mask[labels == idx] = color
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask[:10, :] = 0
    mask[-10:, :] = 0
    mask[:, :10] = 0
    mask[:, -10:] = 0
    return mask / 255.0


def test_mask_rule_on_a_synthetic_label_map():
    labels = np.zeros((192, 224), np.int64)  # background 0
    labels[20:170, 30:200] = 1  # skin
    labels[40:80, 40:110] = 14  # neck: excluded
    labels[40:80, 120:190] = 15  # included
    labels[100:150, 40:90] = 16  # cloth: excluded
    labels[100:150, 110:190] = 17
    labels[150:180, 100:120] = 13  # hair
    rng = np.random.default_rng(0)
    noisy = labels.copy()
    noisy[rng.random(labels.shape) < 0.05] = rng.integers(0, 19)  # scattered labels
    for lab in (labels, noisy):
        ours = mask_from_labels(torch.from_numpy(lab)[None])[0, 0].numpy()
        np.testing.assert_allclose(ours, official_mask(lab), atol=2e-6)
    assert set(FACE_LABELS) == {*range(1, 14), 15}


def test_paste_masks_run_the_network_in_batches(parsenet):
    faces = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    masks = parse_masks(parsenet, faces, batch_size=2)
    with torch.no_grad():
        labels = parsenet(faces * 2 - 1).argmax(1)
    assert masks.shape == (3, 1, 64, 64)
    torch.testing.assert_close(masks, mask_from_labels(labels))


def test_another_network_under_the_parsing_name_is_refused(restorer_dir, tmp_path):
    shutil.copyfile(restorer_dir / "RestoreFormer.pth", tmp_path / PARSENET_FILE)
    with pytest.raises(UnsupportedCheckpointError, match="not a ParseNet state dict"):
        load_parsenet(tmp_path / PARSENET_FILE)


class _FlatRestorer(FaceEnhancer):
    """Every restored face is white: the frame's change is then exactly the paste mask."""

    def restore(self, faces: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(faces)


def _face_points(scale: float, angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    """Five face points: the 512 template moved by a similarity (exactly fitted back)."""
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (FACE_TEMPLATE @ rot.T + np.asarray(shift)).astype(np.float32)


def test_faces_are_pasted_through_the_parsing_mask(restorer_dir, parsenet_file, tmp_path):
    for name in ("GFPGANv1.4.pth", PARSENET_FILE):
        src = restorer_dir / name if name != PARSENET_FILE else parsenet_file
        os.symlink(src, tmp_path / name)
    enh = _FlatRestorer(tmp_path, "cpu", EnhanceConfig(upscale=1))
    assert enh.parsenet is not None
    masks = []
    parse = enh.paste_masks
    enh.paste_masks = lambda faces: masks.append(parse(faces)) or masks[-1]
    frame = np.zeros((1, 150, 140, 3), np.uint8)  # black: the output is the mask itself
    pts = _face_points(0.3, 8.0, (-5.0, -10.0))
    out = enh.enhance(frame, landmarks=pts[None])[0].astype(np.float64) / 255

    # expected: the parsing mask of the restored (white) face, warped into the frame
    # bicubically, as the official paste does (cv2.warpAffine flags=3)
    assert len(masks) == 1 and masks[0].shape == (1, 1, 512, 512)
    mask = masks[0][0, 0].numpy()
    m = cv2.estimateAffinePartial2D(pts, FACE_TEMPLATE, method=cv2.LMEDS)[0]

    def warped(interpolation):
        flags = interpolation | cv2.WARP_INVERSE_MAP
        return cv2.warpAffine(mask, m, (140, 150), flags=flags, borderValue=0)

    # (bicubic overshoots next to the mask's zeroed border; the uint8 frame clips it)
    bicubic = np.clip(warped(cv2.INTER_CUBIC), 0, 1)
    bilinear = np.clip(warped(cv2.INTER_LINEAR), 0, 1)
    np.testing.assert_allclose(out[..., 0], bicubic, atol=1 / 255)
    assert np.abs(out[..., 0] - bilinear).max() > 2 / 255  # the two warps really differ here
    assert np.allclose(out[..., 0], out[..., 2])
    assert (bicubic > 0.5).mean() > 0.3 and (bicubic < 0.5).mean() > 0.02  # not all or nothing


def test_without_the_parsing_file_the_square_mask_is_used_with_one_notice(
    restorer_dir, monkeypatch, caplog
):
    monkeypatch.setattr(restore, "_square_notice", [False])
    with caplog.at_level("INFO", logger="sadtalker_core.enhance.restore"):
        a = _FlatRestorer(restorer_dir, "cpu", EnhanceConfig(upscale=1))
        _FlatRestorer(restorer_dir, "cpu", EnhanceConfig(upscale=1))
    assert a.parsenet is None
    notices = [r for r in caplog.records if PARSENET_FILE in r.getMessage()]
    assert len(notices) == 1 and "soft square" in notices[0].getMessage()
    masks = a.paste_masks(torch.ones(2, 3, 512, 512))
    assert masks.shape == (2, 1, 512, 512) and float(masks[0, 0, 256, 256]) == 1.0
    assert float(F.avg_pool2d(masks[:1], 512)) < 0.9
