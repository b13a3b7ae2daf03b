"""Paste-back: face frames land in the crop box of the full picture; outside stays untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sadtalker_core.face.align import apply_crop, compute_crop_info, resize_square
from sadtalker_core.paste import PasteBack, feather_mask, paste_box
from sadtalker_core.types import Face


def _face(g, extended: bool) -> Face:
    image = g["image_rgb_u8"]
    info = compute_crop_info(g["lm68_xy_down"], (image.shape[1], image.shape[0]), extended=extended)
    crop = resize_square(apply_crop(image, info), 256)
    z = np.zeros
    return Face(
        image,
        None,
        crop,
        info,
        g["lm68_xy_down"],
        z(257, np.float32),
        z(73, np.float32),
        z(5, np.float32),
        "extfull" if extended else "full",
        256,
    )


@pytest.mark.parametrize("extended", [False, True])
def test_feather_paste_fills_the_box_and_keeps_the_rest(golden, extended):
    g = golden("cropmath")
    face = _face(g, extended)
    x0, y0, x1, y1 = paste_box(face)
    prefix = "extcrop" if extended else "crop"
    assert (x1 - x0, y1 - y0) == tuple(
        g[f"{prefix}_out_rgb_u8"].shape[1::-1]
    )  # box = the crop's size
    red = torch.zeros(2, 3, 256, 256)
    red[:, 0] = 1.0
    out = PasteBack(face, blend="feather")(red)
    assert out.shape == (2, *face.image.shape) and out.dtype == np.uint8
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    assert tuple(out[1, cy, cx]) == (255, 0, 0)
    outside = np.ones(face.image.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[0][outside], face.image[outside])
    edge = out[0, cy, x0].astype(int)  # the soft border mixes source and face
    assert np.abs(edge - face.image[cy, x0]).max() <= 12


def test_pasting_the_crop_itself_reproduces_the_picture(golden):
    g = golden("cropmath")
    face = _face(g, False)
    crop = (
        torch.from_numpy(g["crop_out_rgb_u8"]).permute(2, 0, 1)[None].float() / 255
    )  # native size
    out = PasteBack(face)(crop)[0]
    x0, y0, x1, y1 = paste_box(face)
    assert np.abs(out[y0:y1, x0:x1].astype(int) - g["image_rgb_u8"][y0:y1, x0:x1]).max() <= 1


def test_poisson_blend_as_the_official(golden):
    g = golden("cropmath")
    face = _face(g, False)
    frames = torch.from_numpy(face.crop).permute(2, 0, 1)[None].float() / 255
    out = PasteBack(face, blend="poisson")(frames)
    x0, y0, x1, y1 = paste_box(face)
    assert out.shape == (1, *face.image.shape)
    outside = np.ones(face.image.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[0][outside], face.image[outside])


def test_feather_mask_shape_and_range():
    m = feather_mask(40, 60, 0.1, torch.device("cpu"))
    assert m.shape == (1, 1, 40, 60)
    assert float(m.max()) == 1.0 and float(m.min()) > 0.0
    assert float(m[0, 0, 20, 30]) == 1.0 and float(m[0, 0, 0, 0]) < 0.05


def test_unknown_blend_is_refused(golden):
    with pytest.raises(ValueError, match="blend must be one of"):
        PasteBack(_face(golden("cropmath"), False), blend="magic")
