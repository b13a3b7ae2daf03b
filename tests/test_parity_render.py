"""Parity of the face renderer (KPDetector, MappingNet, keypoint motion, SPADE generator) with the
official outputs in ../shared/reference/goldens (mapping, render, render_stages, render512)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _support import max_err as _max_err

from sadtalker_core.models.checkpoint import Checkpoint, load_strict
from sadtalker_core.render import (
    HeadMotion,
    KPDetector,
    MappingNet,
    MappingNetConfig,
    OcclusionAwareSPADEGenerator,
    head_pose_degrees,
    rotation_matrix,
    transform_keypoints,
)
from sadtalker_core.render.conv import winograd

# Tolerances from goldens/README.md.
ATOL_NET = 1e-4  # network outputs (keypoints, logits, deformation, occlusion, mask, features)
ATOL_DEG = 1e-3  # angles in degrees
ATOL_IMG_MAX, ATOL_IMG_MEAN = 2e-3, 1e-4  # rendered RGB

SAFETENSORS_256 = "SadTalker_V0.0.2_256.safetensors"
SAFETENSORS_512 = "SadTalker_V0.0.2_512.safetensors"


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _close(actual: torch.Tensor, expected: np.ndarray, atol: float, what: str) -> None:
    err = _max_err(actual, expected)
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol:g}"


def _close_image(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    assert tuple(actual.shape) == expected.shape
    diff = np.abs(actual.detach().cpu().double().numpy() - expected)
    assert diff.max() <= ATOL_IMG_MAX, f"{what}: max abs error {diff.max():.3g}"
    assert diff.mean() <= ATOL_IMG_MEAN, f"{what}: mean abs error {diff.mean():.3g}"


# ------------------------------------------------------------------------------------------
# Module-scoped networks (loaded once, strictly, from the generated official-format files)


@pytest.fixture(scope="module")
def ckpt256(weights_dir) -> Checkpoint:
    return Checkpoint(weights_dir / SAFETENSORS_256)


@pytest.fixture(scope="module")
def kp_detector(ckpt256) -> KPDetector:
    return load_strict(KPDetector(), ckpt256.state_dict("kp_extractor"), "kp_extractor").eval()


@pytest.fixture(scope="module")
def generator(ckpt256) -> OcclusionAwareSPADEGenerator:
    module = OcclusionAwareSPADEGenerator()
    return load_strict(module, ckpt256.state_dict("generator"), "generator").eval()


def _load_mapping(path) -> MappingNet:
    ckpt = Checkpoint(path)
    assert isinstance(ckpt.section("epoch"), int)
    sd = ckpt.state_dict("mapping")
    return load_strict(MappingNet(MappingNetConfig.from_state_dict(sd)), sd, path.name).eval()


@pytest.fixture(scope="module")
def mappings(weights_dir) -> dict[str, MappingNet]:
    return {
        "m229": _load_mapping(weights_dir / "mapping_00229-model.pth.tar"),
        "m109": _load_mapping(weights_dir / "mapping_00109-model.pth.tar"),
    }


@pytest.fixture(scope="module")
def render256(golden, kp_detector, generator, mappings) -> dict[str, object]:
    """One pass of the 256 renderer: keypoints end to end, then two frames in one batch.

    Frame 0 uses the golden keypoints of render_stages.npz (generator parity in isolation);
    frame 1 uses our own keypoints (end-to-end parity). The batch-1 feature volume is shared
    by both frames.
    """
    g, s = golden("render"), golden("render_stages")
    mapping = mappings["m229"]
    with torch.inference_mode():
        source = _t(g["source_image"])
        kp_canonical = kp_detector(source)
        he_source = mapping(_t(g["source_semantics"]))
        he_driving = mapping(_t(g["target_semantics"][0]))  # (2, 70, 27) windows
        kp_source = transform_keypoints(kp_canonical, he_source)
        kp_driving = transform_keypoints(kp_canonical, he_driving)
        feature_3d = generator.encode_source(source)
        out = generator._animate(  # the private step that keeps the intermediates
            feature_3d,
            torch.cat([_t(s["kp_source"]), kp_source]),
            torch.cat([_t(s["kp_driving"]), kp_driving[1:]]),
        )
    return {
        "kp_canonical": kp_canonical,
        "he_source": he_source,
        "he_driving": he_driving,
        "kp_source": kp_source,
        "kp_driving": kp_driving,
        "feature_3d": feature_3d,
        "out": out,
    }


# ------------------------------------------------------------------------------------------
# Checkpoints


def test_facevid2vid_sections_match_safetensors_blocks(weights_dir, ckpt256):
    old = Checkpoint(weights_dir / "facevid2vid_00189-model.pth.tar")
    for section, prefix, module in [
        ("kp_detector", "kp_extractor", KPDetector()),
        ("generator", "generator", OcclusionAwareSPADEGenerator()),
    ]:
        sd_old = old.state_dict(section)
        sd_new = ckpt256.state_dict(prefix)
        assert sd_old.keys() == sd_new.keys()
        for k in sd_new:
            assert sd_old[k].shape == sd_new[k].shape and sd_old[k].dtype == sd_new[k].dtype, k
        load_strict(module, sd_old, f"{section} in facevid2vid_00189-model.pth.tar")
    # Values differ (the stand-in weights are seeded by the full key), except the fixed buffer.
    torch.testing.assert_close(
        old.state_dict("kp_detector")["down.weight"],
        ckpt256.state_dict("kp_extractor")["down.weight"],
    )


def test_512_blocks_load_strictly(weights_dir):
    ckpt = Checkpoint(weights_dir / SAFETENSORS_512)
    load_strict(KPDetector(), ckpt.state_dict("kp_extractor"), "kp_extractor (512)")
    load_strict(OcclusionAwareSPADEGenerator(), ckpt.state_dict("generator"), "generator (512)")


# ------------------------------------------------------------------------------------------
# MappingNet and keypoint motion


@pytest.mark.parametrize("name", ["m229", "m109"])
def test_mapping_golden(golden, mappings, name):
    g = golden("mapping")
    with torch.inference_mode():
        motion = mappings[name](_t(g[f"{name}_input"]))  # 5 windows
        degrees = head_pose_degrees(motion)
        rot = rotation_matrix(*degrees)
    for field in HeadMotion._fields:
        _close(getattr(motion, field), g[f"{name}_{field}"], ATOL_NET, f"{name} {field}")
    for field, value in zip(("yaw", "pitch", "roll"), degrees):
        _close(value, g[f"{name}_{field}_deg"], ATOL_DEG, f"{name} {field} degrees")
    _close(rot, g[f"{name}_rotmat"], ATOL_NET, f"{name} rotation")


def test_keypoints_golden(golden, render256):
    g = golden("render")
    _close(render256["kp_canonical"], g["kp_canonical"], ATOL_NET, "kp_canonical")
    for field in HeadMotion._fields:
        he_s, he_d = render256["he_source"], render256["he_driving"]
        _close(getattr(he_s, field), g[f"he_source_{field}"], ATOL_NET, f"he_source {field}")
        for i in range(2):
            _close(getattr(he_d, field)[i : i + 1], g[f"he_driving{i}_{field}"], ATOL_NET, field)
    # The raw t is returned untouched (upstream zeroes t_x, t_z in place after recording it).
    assert render256["he_source"].t[0, 0] != 0
    _close(render256["kp_source"], g["kp_source"], ATOL_NET, "kp_source")
    for i in range(2):
        _close(render256["kp_driving"][i : i + 1], g[f"kp_driving{i}"], ATOL_NET, f"kp_driving{i}")


def test_transform_keypoints_overrides_and_immutability():
    gen = torch.Generator().manual_seed(0)
    kp = torch.rand(1, 15, 3, generator=gen) * 2 - 1
    motion = HeadMotion(*(torch.randn(3, n, generator=gen) for n in (66, 66, 66, 3, 45)))
    t_before = motion.t.clone()
    out = transform_keypoints(kp, motion)  # batch-1 canonical keypoints broadcast over 3 windows
    assert out.shape == (3, 15, 3)
    torch.testing.assert_close(motion.t, t_before, rtol=0, atol=0)
    # Forcing all angles to 0 leaves only y-translation and expression offsets.
    zero = transform_keypoints(kp, motion, yaw_deg=0.0, pitch_deg=torch.zeros(3), roll_deg=0)
    expected = kp + motion.exp.view(3, 15, 3)
    expected[..., 1] += motion.t[:, 1:2]
    torch.testing.assert_close(zero, expected)


# ------------------------------------------------------------------------------------------
# Generator at 256


def test_encoder_volume_golden(golden, render256):
    _close(render256["feature_3d"], golden("render_stages")["feature_3d"], ATOL_NET, "feature_3d")


def test_dense_motion_golden(golden, render256):
    g, out = golden("render"), render256["out"]
    _close(out.deformation[:1], g["deformation0"], ATOL_NET, "deformation0")
    _close(out.occlusion_map[:1], g["occlusion_map0"], ATOL_NET, "occlusion_map0")
    _close(out.mask[:1], g["mask0"], ATOL_NET, "mask0")
    _close(out.decoder_input[:1], golden("render_stages")["decoder_input"], ATOL_NET, "decoder_in")
    # Frame 1 comes from our own keypoints, so float32 keypoint noise is included.
    _close(out.deformation[1:], g["deformation1"], ATOL_NET, "deformation1")
    _close(out.occlusion_map[1:], g["occlusion_map1"], ATOL_NET, "occlusion_map1")


def test_rendered_frames_golden(golden, render256):
    g, pred = golden("render"), render256["out"].prediction
    assert pred.shape == (2, 3, 256, 256)
    _close_image(pred[:1], golden("render_stages")["prediction"], "render_stages prediction")
    _close_image(pred[:1], g["generator_direct_frame0"], "generator_direct_frame0")
    _close_image(pred[:1], g["prediction"][:, 0], "prediction frame 0")
    _close_image(pred[1:], g["prediction"][:, 1], "prediction frame 1 (end to end)")


def test_rendered_frame_golden_with_winograd_convolutions(golden, render256, generator):
    """The CPU fast path (NNPACK Winograd, ``precision="auto"``) stays within the goldens'
    tolerances, and really differs from the direct convolutions where it is in effect."""
    s = golden("render_stages")
    with torch.inference_mode(), winograd() as active:
        pred = generator.animate(render256["feature_3d"], _t(s["kp_source"]), _t(s["kp_driving"]))
    _close_image(pred, s["prediction"], "prediction with Winograd convolutions")
    direct = render256["out"].prediction[:1]
    deviation = (pred - direct).abs().max().item()
    if active:
        assert 0 < deviation < 1e-3
    else:
        assert deviation == 0


# ------------------------------------------------------------------------------------------
# 512 model


def test_render512_golden(golden, weights_dir, mappings):
    g = golden("render512")
    ckpt = Checkpoint(weights_dir / SAFETENSORS_512)
    kp_detector = load_strict(KPDetector(), ckpt.state_dict("kp_extractor"), "kp_extractor").eval()
    generator = OcclusionAwareSPADEGenerator()
    generator = load_strict(generator, ckpt.state_dict("generator"), "generator").eval()
    mapping = mappings["m229"]
    with torch.inference_mode():
        source = _t(g["source_image"])
        kp_canonical = kp_detector(source)
        kp_source = transform_keypoints(kp_canonical, mapping(_t(g["source_semantics"])))
        kp_driving = transform_keypoints(kp_canonical, mapping(_t(g["target_semantics"][0])))
        # One frame, fed the golden keypoints so the generator is compared on its own.
        out = generator._animate(  # the private step that keeps the intermediates
            generator.encode_source(source), _t(g["kp_source"]), _t(g["kp_driving0"])
        )
    _close(kp_canonical, g["kp_canonical"], ATOL_NET, "kp_canonical 512")
    _close(kp_source, g["kp_source"], ATOL_NET, "kp_source 512")
    _close(kp_driving, g["kp_driving0"], ATOL_NET, "kp_driving0 512")
    _close(out.occlusion_map, g["occlusion_map0"], ATOL_NET, "occlusion_map0 512")
    assert out.prediction.shape == (1, 3, 512, 512)
    _close_image(out.prediction, g["prediction"][:, 0], "prediction 512")
