"""Parity of the audio front end, ExpNet and PoseVAE with the official goldens (audio*.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _support import REFERENCE
from _support import max_err as _max_err
from scipy.io import wavfile

from sadtalker_core.coeffs import mel as audio
from sadtalker_core.coeffs.audio2exp import Audio2ExpConfig, Audio2ExpNet, predict_expression
from sadtalker_core.coeffs.audio2pose import (
    Audio2PoseConfig,
    Audio2PoseNet,
    latents_from_seed,
    num_latents,
    predict_pose,
    predict_pose_motion,
    smooth_pose,
)
from sadtalker_core.errors import InvalidAudioError, ShapeError
from sadtalker_core.models.checkpoint import Checkpoint, load_strict

KEYS = REFERENCE / "keys"  # ../shared, or $SADTALKER_SHARED (conftest.py)
NET_ATOL = 1e-4  # goldens/README: float32 re-implementation vs official, network outputs
MEL_ATOL = 1e-5  # goldens/README: mel vs mel_f64


def _table_keys(name: str) -> set[str]:
    rows = (KEYS / name).read_text().splitlines()
    return {r.split("\t")[0].split("/", 1)[1] for r in rows if r and not r.startswith("#")}


def _as_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The generated stand-in files store 0-d num_batches_tracked as shape (1,) (numpy promotes
    # 0-d arrays when the generator makes them contiguous); official files hold 0-d tensors.
    # Loading accepts both; values are compared in the module's (official) shape.
    return {
        k: v.reshape(()) if k.endswith("num_batches_tracked") and v.shape == (1,) else v
        for k, v in sd.items()
    }


def _load(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    return load_strict(module, sd, what).eval()


# --------------------------------------------------------------------------- audio front end


@pytest.fixture(scope="module")
def wav(fixtures_dir: Path) -> np.ndarray:
    sr, data = wavfile.read(fixtures_dir / "RD_Radio31_000.wav")
    assert sr == 16000 and data.dtype == np.int16
    x = data.astype(np.float32) / np.float32(32768.0)  # soundfile/librosa float32 scaling
    return x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x  # mono = channel mean


def test_mel_basis_matches(golden):
    ref = golden("audio")["mel_basis"]
    ours = audio.mel_basis()
    assert ours.shape == ref.shape == (80, 401) and ours.dtype == np.float32
    assert _max_err(ours, ref) <= 1e-6


def test_melspectrogram_matches(golden, wav):
    g = golden("audio")
    np.testing.assert_array_equal(wav, g["wav"])
    frames = audio.num_frames(len(wav))
    assert frames == int(g["num_frames"]) == 200  # 128000 samples / 640 per frame
    cropped = audio.crop_or_pad(wav, frames)
    assert len(cropped) == int(g["wav_length"])
    np.testing.assert_array_equal(cropped, g["wav_cropped"])

    mel = audio.melspectrogram(cropped)
    assert mel.shape == (641, 80) and mel.dtype == np.float32  # 1 + 128000 // 200 mel frames
    assert _max_err(mel, g["mel_f64"]) <= MEL_ATOL
    assert _max_err(mel, g["mel"]) <= MEL_ATOL
    mel64 = audio.melspectrogram(cropped, dtype=np.float64)
    assert _max_err(mel64, g["mel_f64"]) <= 1e-9
    # Block size of the vectorised STFT has no effect beyond float64 summation order.
    small_blocks = audio.melspectrogram(cropped, audio.MelConfig(chunk_frames=7), dtype=np.float64)
    assert _max_err(small_blocks, mel64) <= 1e-12


def test_mel_windows_match(golden):
    g, c = golden("audio"), golden("audio2coeff")
    np.testing.assert_array_equal(audio.window_starts(200), g["window_start"])
    windows = audio.mel_windows(g["mel"], 200)
    assert windows.shape == (200, 80, 16)
    assert _max_err(windows, c["indiv_mels"][0, :, 0]) <= MEL_ATOL


def test_audio_to_mel_windows_end_to_end(golden, wav):
    windows = audio.audio_to_mel_windows(wav)
    assert _max_err(windows, golden("audio2coeff")["indiv_mels"][0, :, 0]) <= MEL_ATOL


@pytest.mark.parametrize("n_samples", [640, 641, 1279, 1280, 12345, 16000, 3 * 16000 + 123])
@pytest.mark.parametrize("fps", [25, 30])
def test_window_count_equals_frame_count(n_samples: int, fps: int):
    cfg = audio.MelConfig(fps=fps)
    wav = np.random.default_rng(n_samples).standard_normal(n_samples).astype(np.float32) * 0.1
    frames = audio.num_frames(n_samples, fps=fps)
    assert frames == int(n_samples / (16000 / fps))  # e.g. 1279 samples / 640 = 1 frame at 25 fps
    windows = audio.audio_to_mel_windows(wav, cfg)
    assert windows.shape == (frames, 80, 16)
    assert np.abs(windows).max() <= 4.0


def test_audio_errors():
    with pytest.raises(InvalidAudioError, match="shorter than one video frame"):
        audio.audio_to_mel_windows(np.zeros(639, np.float32))  # 639 < 640 samples per frame
    with pytest.raises(ShapeError, match="mono waveform"):
        audio.melspectrogram(np.zeros((2, 1000), np.float32))
    with pytest.raises(InvalidAudioError, match="NaN"):
        audio.melspectrogram(np.full(1000, np.nan, np.float32))


# --------------------------------------------------------------------------- networks


def test_module_keys_equal_official_tables():
    assert set(Audio2ExpNet().state_dict()) == _table_keys("auido2exp_00300-model.pth.tsv")
    assert set(Audio2PoseNet().state_dict()) == _table_keys("auido2pose_00140-model.pth.tsv")


@pytest.fixture(scope="module")
def nets(weights_dir: Path):
    combined = Checkpoint(weights_dir / "SadTalker_V0.0.2_256.safetensors")
    exp_sd = combined.state_dict("audio2exp")
    pose_sd = combined.state_dict("audio2pose")
    assert Audio2ExpConfig.from_state_dict(exp_sd) == Audio2ExpConfig()
    assert Audio2PoseConfig.from_state_dict(pose_sd) == Audio2PoseConfig()
    exp_net = _load(Audio2ExpNet(), exp_sd, "audio2exp in SadTalker_V0.0.2_256.safetensors")
    pose_net = _load(Audio2PoseNet(), pose_sd, "audio2pose in SadTalker_V0.0.2_256.safetensors")
    return exp_net, pose_net


def test_loaded_tensors_match_fingerprints(nets):
    # Per-key float64 sum / sum of squares / first value of the generated safetensors block:
    # proves that strict loading put every tensor under the right parameter name.
    rows = (KEYS.parent / "fingerprints" / "SadTalker_V0.0.2_256.safetensors.tsv").read_text()
    prints = {}
    for row in rows.splitlines():
        if row and not row.startswith("#"):
            key, total, total_sq, _first = row.split("\t")
            prints[key] = (float(total), float(total_sq))
    for prefix, net in zip(("audio2exp.", "audio2pose."), nets):
        for k, v in net.state_dict().items():
            total, total_sq = prints[prefix + k]
            x = v.double()
            assert abs(x.sum().item() - total) <= 1e-6 * max(1.0, abs(total_sq)), k
            assert abs((x * x).sum().item() - total_sq) <= 1e-6 * max(1.0, total_sq), k


def test_split_files_load_like_the_combined_file(nets, weights_dir: Path):
    # The old split files hold the same state dict under 'model' (keys without prefix). Their
    # stand-in VALUES differ from the safetensors ones (the weight rule seeds on the full key,
    # 'model/...' vs 'audio2exp....'), so the identical structure is what can be compared here.
    for name, combined_net, cls in [
        ("auido2exp_00300-model.pth", nets[0], Audio2ExpNet),
        ("auido2pose_00140-model.pth", nets[1], Audio2PoseNet),
    ]:
        ck = Checkpoint(weights_dir / name)
        assert isinstance(ck.section("epoch"), int)
        split_sd = ck.state_dict("model")
        split_net = _load(cls(), split_sd, name)
        a, b = combined_net.state_dict(), split_net.state_dict()
        assert list(a) == list(b)
        for k in a:
            assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        for k, v in _as_official(split_sd).items():
            assert torch.equal(b[k], v), k


@pytest.fixture(scope="module")
def a2c(golden):
    g = golden("audio2coeff")
    return {k: torch.from_numpy(np.asarray(v)) for k, v in g.items()}


@pytest.fixture(scope="module")
def exp_pred(nets, a2c) -> torch.Tensor:
    return predict_expression(nets[0], a2c["indiv_mels"], a2c["ref"][0, :, :64], a2c["ratio_gt"])


def test_audio2exp_matches(nets, a2c, golden, exp_pred):
    exp_net, _ = nets
    g = golden("audio2coeff")
    exp = exp_pred
    assert exp.shape == (200, 64)
    assert _max_err(exp, g["exp_coeff_pred"][0]) <= NET_ATOL
    # Chunking is a memory knob only: the official 10-frame chunks give the same numbers.
    exp10 = predict_expression(
        exp_net,
        a2c["indiv_mels"][:, :30],
        a2c["ref"][0, :30],
        a2c["ratio_gt"][0, :30],
        chunk_size=10,
    )
    assert _max_err(exp10, exp[:30].numpy()) <= 1e-5


def test_audio2pose_matches(nets, a2c, golden, exp_pred):
    _, pose_net = nets
    g = golden("audio2coeff")
    ref_pose = a2c["ref"][0, 0, 64:70]
    style = int(g["pose_style"])
    z = list(a2c["z"])  # 7 latents: 199 = 6 * 32 + 7 -> 6 full chunks + 1 remainder
    assert len(z) == num_latents(200) == 7

    with torch.no_grad():
        emb = pose_net.encode_audio(a2c["indiv_mels"][:, 1:33])
    assert _max_err(emb, g["audio_emb_chunk0"]) <= NET_ATOL

    motion = predict_pose_motion(pose_net, a2c["indiv_mels"], ref_pose, style, z)
    assert motion.shape == (200, 6)
    assert _max_err(motion, g["pose_motion_pred"][0]) <= NET_ATOL
    pose = ref_pose + motion  # what predict_pose returns (checked in the short-clip test)
    assert _max_err(pose, g["pose_pred_raw"][0]) <= NET_ATOL

    coeffs = torch.cat([exp_pred, smooth_pose(pose)], dim=1)  # (200, 64 + 6)
    assert _max_err(coeffs, g["coeffs_final"]) <= NET_ATOL


def test_audio2pose_short_clip_pads_remainder(nets, a2c, golden):
    _, pose_net = nets
    g = golden("audio2coeff")
    t = int(g["short_num_frames"])  # 20 frames: 19 < 32, only the left-padded remainder chunk
    assert num_latents(t) == 1
    pose = predict_pose(
        pose_net, a2c["indiv_mels"][:, :t], a2c["ref"][0, 0], int(g["pose_style"]), a2c["short_z"]
    )
    assert _max_err(pose, g["short_pose_pred_raw"][0]) <= NET_ATOL


def test_latents_from_seed(nets, a2c, golden):
    _, pose_net = nets
    # The goldens drew their latents with torch seed 777 on the CPU, one (1, 64) per chunk.
    z = latents_from_seed(200, 777)
    assert len(z) == 7 and all(v.shape == (1, 64) for v in z)
    np.testing.assert_array_equal(torch.cat(z).numpy(), golden("audio2coeff")["z"][:, 0])
    gen = torch.Generator().manual_seed(777)
    assert torch.equal(torch.cat(latents_from_seed(200, gen)), torch.cat(z))
    state = torch.random.get_rng_state()
    seeded = predict_pose(pose_net, a2c["indiv_mels"][:, :12], a2c["ref"][0, 0], 0, 5)
    explicit = predict_pose(
        pose_net, a2c["indiv_mels"][:, :12], a2c["ref"][0, 0], 0, latents_from_seed(12, 5)
    )
    assert torch.equal(seeded, explicit)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched


def test_pose_edge_cases(nets, a2c):
    _, pose_net = nets
    ref = a2c["ref"][0, 0, 64:70]
    one = predict_pose(pose_net, a2c["indiv_mels"][:, :1], ref, 0, [])
    assert torch.equal(one, ref[None])  # T = 1: the reference frame only, no latent
    with pytest.raises(ShapeError, match="need 2 latents"):  # 39 = 32 + 7 -> 2 chunks
        predict_pose(pose_net, a2c["indiv_mels"][:, :40], ref, 0, latents_from_seed(20, 0))
    with pytest.raises(ValueError, match="pose_style"):
        predict_pose(pose_net, a2c["indiv_mels"][:, :20], ref, 46, 0)


@pytest.mark.parametrize("t", [1, 2, 3, 4, 5, 12, 13, 40])
def test_smooth_pose_lengths(t: int):
    pose = torch.from_numpy(np.random.default_rng(t).standard_normal((t, 6)).astype(np.float32))
    out = smooth_pose(pose)
    assert out.shape == (t, 6) and out.dtype == pose.dtype
    if t <= 4:
        # T <= 2: window <= polyorder, returned unchanged; T = 3, 4: window 3 = exact quadratic.
        assert _max_err(out, pose.numpy()) <= 1e-5
    else:
        assert _max_err(out, pose.numpy()) > 1e-3
    arr_out = smooth_pose(pose.numpy())
    assert isinstance(arr_out, np.ndarray)
    np.testing.assert_array_equal(arr_out, out.numpy())
