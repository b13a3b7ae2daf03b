"""Source pictures as users bring them: formats, alpha, 16-bit, EXIF, lying extensions, tensors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from sadtalker_core.errors import InvalidImageError
from sadtalker_core.io.image import ALPHA_BACKGROUND, load_image


def _gradient(h=40, w=60) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 6 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def test_rgb_png_round_trip(tmp_path):
    rgb = _gradient()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.rgb.dtype == np.uint8 and img.rgb.shape == (40, 60, 3)
    np.testing.assert_array_equal(img.rgb, rgb)
    assert img.alpha is None and img.size == (60, 40) and img.name == "a.png"


def test_rgba_is_composited_on_grey_and_alpha_kept(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :5, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    img = load_image(tmp_path / "t.png")
    assert tuple(img.rgb[0, 0]) == (255, 0, 0)
    assert tuple(img.rgb[0, 9]) == ALPHA_BACKGROUND
    np.testing.assert_array_equal(img.alpha, rgba[..., 3])


def test_fully_opaque_alpha_is_dropped():
    rgba = np.full((8, 8, 4), 200, np.uint8)
    rgba[..., 3] = 255
    assert load_image(rgba).alpha is None


def test_grayscale_palette_and_16bit(tmp_path):
    gray = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png")
    assert g.rgb.shape == (8, 8, 3)
    np.testing.assert_array_equal(g.rgb[..., 1], gray)

    Image.fromarray(_gradient()).convert("P", palette=Image.Palette.ADAPTIVE).save(
        tmp_path / "p.png"
    )
    assert load_image(tmp_path / "p.png").rgb.shape == (40, 60, 3)

    sixteen = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "s.png")
    s = load_image(tmp_path / "s.png")
    expected = np.round(sixteen / 65535.0 * 255).astype(np.uint8)
    assert np.abs(s.rgb[..., 0].astype(int) - expected).max() <= 1


def test_exif_orientation_is_applied(tmp_path):
    rgb = _gradient(20, 50)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=95)
    img = load_image(tmp_path / "r.jpg")
    assert img.size == (20, 50)  # width and height swapped


def test_extension_that_lies_is_decoded_by_content(tmp_path, fixtures_dir):
    img = load_image(fixtures_dir / "full_body_1.png")  # JPEG bytes named .png
    assert img.size == (800, 1200)
    buf = io.BytesIO()
    Image.fromarray(_gradient()).save(buf, format="PNG")
    (tmp_path / "photo.jpg").write_bytes(buf.getvalue())
    np.testing.assert_array_equal(load_image(tmp_path / "photo.jpg").rgb, _gradient())


def test_tensors_and_float_arrays():
    rgb = _gradient()
    t = torch.from_numpy(rgb).float().div(255).unsqueeze(0).repeat(2, 1, 1, 1)  # (2, H, W, 3)
    np.testing.assert_array_equal(load_image(t[0]).rgb, rgb)
    with pytest.raises(InvalidImageError, match="shape"):  # a batch: the adapter picks one
        load_image(t)
    chw = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    np.testing.assert_array_equal(load_image(chw).rgb, rgb)
    np.testing.assert_array_equal(load_image(rgb.astype(np.float64)).rgb, rgb)  # 0..255 floats


def test_pil_input():
    rgb = _gradient()
    np.testing.assert_array_equal(load_image(Image.fromarray(rgb)).rgb, rgb)


def test_corrupt_missing_and_empty_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(InvalidImageError, match=r"bad.png cannot be decoded.*corrupt"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(InvalidImageError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(InvalidImageError, match="shape"):
        load_image(np.zeros((5, 5, 7), np.uint8))
