"""Parity of the face stage (ReconNet, Deep3DFaceRecon alignment, FFHQ crop) with the goldens."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from _support import REFERENCE
from _support import make_weights_module as _make_weights_module

from sadtalker_core.errors import ShapeError, UnsupportedCheckpointError
from sadtalker_core.face import (
    CropInfo,
    ReconCoeffs,
    ReconNet,
    ReconNetConfig,
    align_for_recon,
    aligned_to_tensor,
    apply_crop,
    coeff_3dmm_row,
    compute_crop_info,
    crop_face,
    crop_quad_from_landmarks,
    landmarks_68_to_5,
    load_lm3d_std_5,
    load_lm3d_std_68,
    resize_square,
)
from sadtalker_core.models.checkpoint import Checkpoint, load_strict

ATOL_NET = 1e-4  # goldens/README.md: network outputs


def _key_table(name: str, section: str) -> dict[str, list[int]]:
    """{state-dict key: shape} of one block of an official key table."""
    out = {}
    for line in (REFERENCE / "keys" / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, _dtype, shape = line.split("\t")
        for head in (section + ".", section + "/"):
            if key.startswith(head):
                out[key[len(head) :]] = json.loads(shape)
    return out


@pytest.fixture(scope="module")
def recon_sd_safetensors(weights_dir):
    return Checkpoint(weights_dir / "SadTalker_V0.0.2_256.safetensors").state_dict("face_3drecon")


@pytest.fixture(scope="module")
def recon_net(recon_sd_safetensors):
    net = ReconNet()
    load_strict(net, recon_sd_safetensors, "face_3drecon in SadTalker_V0.0.2_256.safetensors")
    return net.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# ReconNet: keys, strict loading, numerics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "section"),
    [("SadTalker_V0.0.2_256.safetensors.tsv", "face_3drecon"), ("epoch_20.pth.tsv", "net_recon")],
)
def test_recon_state_dict_equals_key_table(table, section):
    expected = _key_table(table, section)
    got = {k: list(v.shape) for k, v in ReconNet().state_dict().items()}
    assert len(expected) == 332
    assert got == expected


def test_recon_strict_load_safetensors_and_pth(weights_dir, recon_sd_safetensors):
    """Both official containers load strictly and hold the same keys, dtypes and shapes.

    The stand-in generator seeds every tensor with its full key (``face_3drecon.<k>`` vs
    ``net_recon/<k>``), so the two generated files hold different values by construction; each
    block is checked against the weight rule of its own key instead, which proves that both readers
    return the right tensors under the right names.
    """
    sd_pth = Checkpoint(weights_dir / "epoch_20.pth").state_dict("net_recon")
    assert sd_pth.keys() == recon_sd_safetensors.keys()
    make_weights = _make_weights_module()
    for key, value in recon_sd_safetensors.items():
        assert sd_pth[key].dtype == value.dtype and sd_pth[key].shape == value.shape, key
        dtype, shape = str(value.dtype).removeprefix("torch."), tuple(value.shape)
        for full_key, tensor in ((f"face_3drecon.{key}", value), (f"net_recon/{key}", sd_pth[key])):
            expected = make_weights.value_for(full_key, dtype, shape, lookup=None)
            np.testing.assert_array_equal(tensor.numpy(), expected, err_msg=full_key)
    load_strict(ReconNet(), sd_pth, "net_recon in epoch_20.pth")


def test_recon_epoch20_container_gives_identical_results(tmp_path, recon_sd_safetensors, golden):
    """An epoch_20.pth holding the safetensors tensors (plus the trainer's extra entries) loads
    through the old-format path into a network with bit-identical outputs."""
    path = tmp_path / "epoch_20.pth"
    torch.save({"net_recon": recon_sd_safetensors, "opt_00": {"state": {}}, "epoch": 20}, path)
    sd_pth = Checkpoint(path).state_dict("net_recon")
    for key, value in recon_sd_safetensors.items():
        assert torch.equal(sd_pth[key], value), key
    net = load_strict(ReconNet(), sd_pth, "net_recon in epoch_20.pth").eval()
    with torch.no_grad():
        full = net(torch.from_numpy(golden("facerecon")["im_t"]))
    np.testing.assert_allclose(
        full.numpy(), golden("facerecon")["full_coeff"], rtol=0, atol=ATOL_NET
    )


def test_recon_strict_load_rejects_wrong_block(recon_sd_safetensors):
    sd = dict(recon_sd_safetensors)
    sd.pop("final_layers.6.bias")
    with pytest.raises(UnsupportedCheckpointError, match="1 missing keys: final_layers.6.bias"):
        load_strict(ReconNet(), sd, "face_3drecon")


def test_recon_forward_matches_golden(recon_net, golden):
    g = golden("facerecon")
    im_t = torch.from_numpy(g["im_t"])
    with torch.no_grad():
        feat = recon_net.features(im_t)
        full = recon_net(im_t)
    assert feat.shape == (1, 2048, 1, 1)
    assert full.shape == (1, 257)  # 80 + 64 + 80 + 3 + 27 + 2 + 1
    np.testing.assert_allclose(feat.numpy(), g["backbone_feat"], rtol=0, atol=ATOL_NET)
    np.testing.assert_allclose(full.numpy(), g["full_coeff"], rtol=0, atol=ATOL_NET)
    row = coeff_3dmm_row(full, g["trans_params"])
    assert row.shape == (1, 73)  # exp 64 + angle 3 + trans 3 + crop params 3
    np.testing.assert_allclose(row.numpy(), g["coeff_3dmm_73"], rtol=0, atol=ATOL_NET)


def test_recon_batch_is_independent(recon_net, golden):
    g = golden("facerecon")
    im_t = torch.from_numpy(g["im_t"])
    batch = torch.cat([im_t, im_t.flip(-1)], dim=0)  # (2, 3, 224, 224)
    with torch.no_grad():
        full = recon_net(batch)
    assert full.shape == (2, 257)
    np.testing.assert_allclose(full[:1].numpy(), g["full_coeff"], rtol=0, atol=ATOL_NET)
    assert not torch.allclose(full[0], full[1])
    rows = coeff_3dmm_row(full, torch.from_numpy(g["trans_params"]))
    assert rows.shape == (2, 73)
    assert torch.equal(rows[:, 70:], torch.from_numpy(g["trans_params"][2:]).expand(2, 3))


def test_recon_coeff_split_layout(golden):
    full = torch.from_numpy(golden("facerecon")["full_coeff"])
    c = ReconCoeffs.split(full)
    sizes = [c.id.shape[1], c.exp.shape[1], c.tex.shape[1], c.angle.shape[1], c.gamma.shape[1]]
    assert sizes == [80, 64, 80, 3, 27]
    assert torch.equal(c.exp, full[:, 80:144])
    assert torch.equal(c.angle, full[:, 224:227])
    assert torch.equal(c.trans, full[:, 254:257])
    assert ReconNetConfig().coeff_dims == 257
    with pytest.raises(ShapeError, match=r"Expected \(B, 257\) coefficients; got \(1, 256\)"):
        ReconCoeffs.split(full[:, :256])
    with pytest.raises(ShapeError, match=r"ReconNet expects images of shape \(B, 3, H, W\)"):
        ReconNet()(torch.zeros(1, 224, 224))


# ---------------------------------------------------------------------------------------------
# Deep3DFaceRecon alignment
# ---------------------------------------------------------------------------------------------


def test_landmark_templates(golden):
    g = golden("facerecon")
    np.testing.assert_array_equal(load_lm3d_std_68(), g["lm3d_68"])
    assert load_lm3d_std_68().dtype == np.float32
    np.testing.assert_array_equal(load_lm3d_std_5(), g["lm3d_std_5"])
    lm_y_up = g["lm68_xy_down"].copy()
    lm_y_up[:, 1] = 256 - 1 - lm_y_up[:, 1]  # frame is 256 high
    np.testing.assert_array_equal(landmarks_68_to_5(lm_y_up), g["lm5p_y_up"])
    with pytest.raises(ShapeError, match=r"lm68 must have shape \(68, 2 or 3\); got \(5, 2\)"):
        landmarks_68_to_5(g["lm5p_y_up"])


def test_align_for_recon_matches_golden(golden):
    g = golden("facerecon")
    aligned, lm_aligned, trans_params = align_for_recon(
        g["frame256_rgb_u8"], g["lm68_xy_down"], g["lm3d_std_5"]
    )
    assert trans_params.dtype == np.float32
    np.testing.assert_allclose(trans_params, g["trans_params"], rtol=1e-6, atol=0)
    assert aligned.shape == (224, 224, 3) and aligned.dtype == np.uint8
    # uint8 images: exact with Pillow's bicubic; one level allowed (goldens/README.md).
    diff = np.abs(aligned.astype(np.int16) - g["aligned224_rgb_u8"].astype(np.int16))
    assert diff.max() <= 1
    np.testing.assert_allclose(lm_aligned, g["lm_aligned"], rtol=0, atol=ATOL_NET)
    np.testing.assert_array_equal(aligned_to_tensor(g["aligned224_rgb_u8"]).numpy(), g["im_t"])
    im_t = aligned_to_tensor(aligned)
    assert im_t.shape == (1, 3, 224, 224) and im_t.dtype == torch.float32
    np.testing.assert_allclose(im_t.numpy(), g["im_t"], rtol=0, atol=1 / 255 + 1e-7)
    with pytest.raises(ShapeError, match=r"image_rgb_u8 must be an \(H, W, 3\) uint8 RGB array"):
        align_for_recon(g["frame256_rgb_u8"].astype(np.float32), g["lm68_xy_down"])


def test_frame_to_coeff_row_end_to_end(recon_net, golden):
    g = golden("facerecon")
    aligned, _, trans_params = align_for_recon(g["frame256_rgb_u8"], g["lm68_xy_down"])
    with torch.no_grad():
        row = coeff_3dmm_row(recon_net(aligned_to_tensor(aligned)), trans_params)
    np.testing.assert_allclose(row.numpy(), g["coeff_3dmm_73"], rtol=0, atol=ATOL_NET)


# ---------------------------------------------------------------------------------------------
# FFHQ-style crop (crop / extcrop)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "extended"), [("crop", False), ("extcrop", True)])
def test_crop_matches_golden(golden, mode, extended):
    c = golden("cropmath")
    image, lm = c["image_rgb_u8"], c["lm68_xy_down"]
    assert image.shape == (474, 474, 3) and lm.shape == (68, 2)
    out, info = crop_face(image, lm, extended=extended)
    assert info.crop_box == tuple(c[f"{mode}_crop_box"].tolist())
    np.testing.assert_allclose(info.rect, c[f"{mode}_quad_lt_rb"], rtol=0, atol=1e-9)
    assert info.face_size == tuple(c[f"{mode}_crop_info_size"].tolist())
    np.testing.assert_array_equal(out, c[f"{mode}_out_rgb_u8"])
    out256 = resize_square(out, 256)
    assert out256.shape == (256, 256, 3)
    # cv2 bilinear; one level allowed for another OpenCV build (goldens/README.md).
    diff = np.abs(out256.astype(np.int16) - c[f"{mode}_out256_rgb_u8"].astype(np.int16))
    assert diff.max() <= 1


def test_crop_info_fields_are_consistent(golden):
    c = golden("cropmath")
    image, lm = c["image_rgb_u8"], c["lm68_xy_down"]
    info = compute_crop_info(lm, (474, 474))
    ext = dataclasses.replace(info, extended=True)
    assert ext == compute_crop_info(lm, (474, 474), extended=True)
    assert hash(ext) != hash(info)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.shrink = 2  # type: ignore[misc]
    # No shrink at this size: the resized frame is the original frame.
    assert info.shrink == 1 and info.resized_size == info.original_size == (474, 474)
    assert info.image_box_original == tuple(float(v) for v in info.image_box)
    # The quad: same as the public helper; the rect is its +0.5-shifted bounds in the box frame.
    np.testing.assert_array_equal(info.quad_xy, crop_quad_from_landmarks(lm))
    q = info.quad_xy - np.array(info.crop_box[:2]) + 0.5
    lx, ly, rx, ry = info.rect
    assert lx == max(min(q[0, 0], q[1, 0]), 0) and ly == max(min(q[0, 1], q[3, 1]), 0)
    assert rx == min(max(q[2, 0], q[3, 0]), 474) and ry == min(max(q[1, 1], q[2, 1]), 474)
    # The quad (a square of side qsize) lies inside the crop box grown around it.
    left, top, right, bottom = info.crop_box
    assert (info.quad_xy[:, 0] >= left).all() and (info.quad_xy[:, 0] <= right).all()
    assert (info.quad_xy[:, 1] >= top).all() and (info.quad_xy[:, 1] <= bottom).all()
    # Round trip: the boxes index the original frame and give back the crops.
    x1, y1, x2, y2 = info.face_box
    np.testing.assert_array_equal(image[y1:y2, x1:x2], c["crop_out_rgb_u8"])
    assert (x2 - x1, y2 - y1) == info.face_size
    x1, y1, x2, y2 = ext.image_box
    np.testing.assert_array_equal(image[y1:y2, x1:x2], c["extcrop_out_rgb_u8"])
    np.testing.assert_array_equal(apply_crop(image, ext), c["extcrop_out_rgb_u8"])
    with pytest.raises(ShapeError, match="Frame is 400x474 but the crop was computed for 474x474"):
        apply_crop(image[:, :400], info)


def test_crop_info_shrinks_huge_faces(golden):
    lm = golden("cropmath")["lm68_xy_down"].astype(np.float64) * 10  # a 4740 px photo
    info = compute_crop_info(lm, (4740, 4740))
    small = compute_crop_info(golden("cropmath")["lm68_xy_down"], (474, 474))
    # qsize ~ 10 * 268 px; shrink = floor(qsize / 512 * 0.5) = 2
    assert info.shrink == 2
    assert info.resized_size == (2370, 2370)  # rint(4740 / 2)
    np.testing.assert_allclose(info.quad_xy, small.quad_xy * 5, rtol=1e-5)
    np.testing.assert_allclose(info.image_box_original, np.array(info.image_box) * 2)
    assert isinstance(info, CropInfo) and not info.extended
    left, top, right, bottom = info.crop_box
    assert 0 <= left < right <= 2370 and 0 <= top < bottom <= 2370
