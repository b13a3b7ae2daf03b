"""Coefficient stage: golden parity, seeding, blinks, still/scales, fps resampling, idle, IO, CLI."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from _support import max_err as _max_err
from scipy.io import loadmat, savemat, wavfile

from sadtalker_core.cli.coeffs import add_cli
from sadtalker_core.coeffs import generate as coeffs_generate
from sadtalker_core.coeffs.audio2exp import predict_expression
from sadtalker_core.coeffs.blink import blink_schedule
from sadtalker_core.coeffs.files import load_coeff_rows, load_source, save_mat
from sadtalker_core.coeffs.generate import (
    CoeffConfig,
    CoeffModels,
    frame_counts,
    generate_coeffs,
    resample_coeffs,
)
from sadtalker_core.coeffs.mel import audio_to_mel_windows
from sadtalker_core.errors import InvalidAudioError, ShapeError
from sadtalker_core.types import Coeffs, camera_path

NET_ATOL = 1e-4  # goldens/README: float32 re-implementation vs official, network outputs
CLIP_S = 1.64  # s of fixture speech used by the fast tests
T25 = 41  # 1.64 s * 25 fps
EXP, POSE = slice(0, 64), slice(64, 70)


@pytest.fixture(scope="module")
def models(weights_dir: Path) -> CoeffModels:
    return CoeffModels.load([weights_dir], size=256, device="cpu")


@pytest.fixture(scope="module")
def g(golden) -> dict:
    return golden("audio2coeff")


@pytest.fixture(scope="module")
def src(g) -> np.ndarray:
    return g["first_coeff"][0]  # (73,) exp 64, angle 3, trans 3, crop 3


@pytest.fixture(scope="module")
def clip(fixtures_dir: Path) -> tuple[np.ndarray, int]:
    rate, data = wavfile.read(fixtures_dir / "RD_Radio31_000.wav")
    x = (data.astype(np.float32) / 32768).mean(axis=1, dtype=np.float32)
    return x[: int(CLIP_S * rate)], rate  # 26240 samples


@pytest.fixture(scope="module")
def run(models, src, clip):
    """run(**config) -> Coeffs of the 1.64 s clip; results cached per config."""
    cache: dict = {}

    def _run(**kw) -> Coeffs:
        key = tuple(sorted(kw.items()))
        if key not in cache:
            cache[key] = generate_coeffs(src, clip, CoeffConfig(**kw), models=models)
        return cache[key]

    return _run


# --------------------------------------------------------------------------- parity


def test_stage_matches_golden(models, g, src, fixtures_dir: Path, golden, monkeypatch):
    # The official random draws: the goldens drew their latents from torch seed 777 on the CPU,
    # which the stage's own seeded generator reproduces; the (python-random) blink ratio is put
    # in the stage's private draw.
    monkeypatch.setattr(coeffs_generate, "_draw_blinks", lambda frames, seed: g["ratio_gt"])
    wav = fixtures_dir / "RD_Radio31_000.wav"
    cfg = CoeffConfig(pose_style=int(g["pose_style"]), seed=777)
    out = generate_coeffs(src, wav, cfg, models=models)
    assert out.coeffs.shape == (200, 70) and out.coeffs.dtype == np.float32  # 8 s * 25 fps
    assert _max_err(out.coeffs, g["coeffs_final"]) <= NET_ATOL
    assert out.fps == 25.0 and out.sample_rate == 16000
    np.testing.assert_array_equal(out.audio, golden("audio")["wav_cropped"])  # 128000 samples


# --------------------------------------------------------------------------- randomness


def _official_blinks(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """The official schedule written as its loop, drawing one gap at a time from ``rng``."""
    ratio = np.zeros(num_frames, np.float32)
    if num_frames <= 20:
        return ratio
    lo, hi = min(10, num_frames), min(int(num_frames / 2), 70)
    if hi <= lo:
        return ratio
    frame = 0
    while frame < num_frames:
        gap = int(rng.integers(lo, hi))
        if frame + gap + 5 <= num_frames - 1:
            ratio[frame + gap : frame + gap + 5] = [0.5, 0.9, 1.0, 0.9, 0.5]
            frame += gap + 5
        else:
            break
    return ratio


@pytest.mark.parametrize("t", [1, 20, 21, 22, 23, 41, 100, 139, 140, 141, 1000, 15000])
def test_blink_schedule_follows_official_algorithm(t: int):
    for seed in range(4):
        ours = blink_schedule(t, np.random.default_rng(seed))
        np.testing.assert_array_equal(ours, _official_blinks(t, np.random.default_rng(seed)))
    if t <= 21:
        assert not ours.any()  # too short (21: empty gap range, where the official code fails)
    if t >= 1000:
        prev = np.concatenate([[0.0], ours[:-1]])
        starts = np.flatnonzero((ours == 0.5) & (prev == 0))  # first frame of each blink
        gaps = np.diff(starts) - 5  # frames between blinks
        assert gaps.min() >= 10 and gaps.max() < 70
        assert 1.0 < t / len(starts) / 25 < 2.2  # one blink every ~1.6 s on average


def test_same_seed_is_bit_identical_and_seeds_differ(run, models, src, clip):
    a = run(seed=1)
    again = generate_coeffs(src, clip, CoeffConfig(seed=1), models=models)
    np.testing.assert_array_equal(a.coeffs, again.coeffs)
    b = run(seed=2)
    assert a.coeffs.shape == b.coeffs.shape == (T25, 70)
    blinks1 = blink_schedule(T25, np.random.default_rng(1))
    blinks2 = blink_schedule(T25, np.random.default_rng(2))
    assert blinks1.any() and blinks2.any() and not np.array_equal(blinks1, blinks2)
    assert _max_err(a.coeffs[:, POSE], b.coeffs[:, POSE]) > 1e-3  # other latents
    assert _max_err(a.coeffs[:, EXP], b.coeffs[:, EXP]) > 1e-4  # other blinks
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    run(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNGs untouched
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)


# --------------------------------------------------------------------------- modes and scales


def test_still_keeps_source_pose_and_still_blinks(run, src):
    still = run(still=True, seed=1)
    np.testing.assert_array_equal(still.coeffs[:, POSE], np.broadcast_to(src[POSE], (T25, 6)))
    no_blink = run(still=True, seed=1, blink=False)
    ratio = blink_schedule(T25, np.random.default_rng(1))
    diff = np.abs(still.coeffs[:, EXP] - no_blink.coeffs[:, EXP]).max(axis=1)  # (T,)
    assert (diff[ratio > 0] > 1e-4).all()  # blinks in still mode
    assert (diff[ratio == 0] == 0).all()  # and nothing else changes
    # still mode leaves the expression identical to the moving-head result
    np.testing.assert_array_equal(still.coeffs[:, EXP], run(seed=1).coeffs[:, EXP])


def test_expression_scale(run, src):
    one = run(still=True, seed=1)
    zero = run(still=True, seed=1, expression_scale=0.0)
    np.testing.assert_array_equal(zero.coeffs[:, EXP], np.broadcast_to(src[EXP], (T25, 64)))
    two = run(still=True, seed=1, expression_scale=2.0)
    expected = src[EXP] + 2.0 * (one.coeffs[:, EXP] - src[EXP])
    assert _max_err(two.coeffs[:, EXP], expected) <= 1e-5
    np.testing.assert_array_equal(two.coeffs[:, POSE], one.coeffs[:, POSE])


def test_head_motion_scale(run, src):
    one = run(seed=1)
    zero = run(seed=1, head_motion_scale=0.0)
    np.testing.assert_array_equal(zero.coeffs[:, POSE], np.broadcast_to(src[POSE], (T25, 6)))
    half = run(seed=1, head_motion_scale=0.5)
    expected = src[POSE] + 0.5 * (one.coeffs[:, POSE] - src[POSE])
    assert _max_err(half.coeffs[:, POSE], expected) <= 1e-6
    np.testing.assert_array_equal(half.coeffs[:, EXP], one.coeffs[:, EXP])
    assert np.abs(one.coeffs[:, POSE] - src[POSE]).max() > 1e-3  # there is motion to scale


def test_fps_resampling_keeps_lip_sync(run):
    c25, c30, c24 = run(seed=1), run(seed=1, fps=30), run(seed=1, fps=24)
    assert c30.coeffs.shape == (49, 70)  # round(1.64 s * 30) = round(49.2)
    assert c24.coeffs.shape == (39, 70)  # round(39.36)
    assert c30.audio.shape == (26133,)  # round(49 / 30 s * 16 kHz)
    assert c30.duration == pytest.approx(49 / 30) and c30.fps == 30.0
    assert c30.options["model_frames"] == 41  # ceil(48 * 25 / 30) + 1 covers the last frame
    # Output frame j shows time j / 30 s: the 25 fps rows interpolated there. Away from the
    # end (where the 30 fps clip's audio is shorter by a fraction of a frame) they are equal.
    ref = resample_coeffs(c25.coeffs, 25, 30, 49)
    assert _max_err(c30.coeffs[:42, EXP], ref[:42, EXP]) <= 1e-5  # frames up to 35 at 25 fps
    assert _max_err(c30.coeffs[:30, POSE], ref[:30, POSE]) <= 1e-5  # first pose chunk
    np.testing.assert_array_equal(resample_coeffs(c25.coeffs, 25, 25, T25), c25.coeffs)


def test_frame_counts():
    assert frame_counts(8.0, 25) == (200, 200)
    assert frame_counts(1.02, 25) == (26, 26)  # 25.5 rounds up (official int(): 25)
    assert frame_counts(1.01, 25) == (25, 25)
    assert frame_counts(1.64, 30) == (49, 41)
    assert frame_counts(2.0, 30) == (60, 51)  # frame 59 sits at 25 fps position 49.17: needs 50
    assert frame_counts(0.04, 25) == (1, 1)
    assert frame_counts(600.0, 24) == (14400, 15000)  # 10 min


def test_idle_mode(models, src):
    cfg = CoeffConfig(idle_seconds=2.0, blink=False, seed=4)
    idle = generate_coeffs(src, None, cfg, models=models)
    assert idle.coeffs.shape == (50, 70)  # 2 s * 25 fps
    assert idle.audio.shape == (32000,) and not idle.audio.any()
    # Silent input: every frame's expression is the same (closed, still mouth) ...
    np.testing.assert_array_equal(
        idle.coeffs[:, EXP], np.broadcast_to(idle.coeffs[0, EXP], (50, 64))
    )
    assert np.abs(idle.coeffs[:, POSE] - src[POSE]).max() > 1e-3  # ... while the head moves
    blinking = generate_coeffs(src, None, dataclasses.replace(cfg, blink=True), models=models)
    ratio = blink_schedule(50, np.random.default_rng(4))
    moved = np.abs(blinking.coeffs[:, EXP] - idle.coeffs[:, EXP]).max(axis=1) > 0
    np.testing.assert_array_equal(moved, ratio > 0)
    at30 = generate_coeffs(src, None, CoeffConfig(idle_seconds=1.0, fps=30), models=models)
    assert at30.coeffs.shape == (30, 70) and at30.options["idle_seconds"] == 1.0
    with pytest.raises(ValueError, match="either audio or idle_seconds"):
        generate_coeffs(src, np.zeros(3), cfg, models=models)
    with pytest.raises(ValueError, match="No audio given"):
        generate_coeffs(src, None, CoeffConfig(), models=models)


def test_reference_video_rows(run, models, src, clip):
    rng = np.random.default_rng(7)
    video = (rng.standard_normal((17, 73)) * 0.1).astype(np.float32)  # 17 frames < 41: tiled
    base = run(seed=1)
    out = generate_coeffs(
        src, clip, CoeffConfig(seed=1), models=models, ref_eyeblink=video, ref_pose=video
    )
    tiled = video[np.arange(T25) % 17]
    expected_pose = base.coeffs[:, POSE] + (tiled[:, POSE] - video[0, POSE])
    assert _max_err(out.coeffs[:, POSE], expected_pose) <= 1e-6
    # ExpNet gets the video's expressions as reference and no random blinks.
    windows = audio_to_mel_windows(clip[0])
    exp = predict_expression(models.exp_net, windows, tiled[:, :64], np.zeros(T25))
    assert _max_err(out.coeffs[:, EXP], exp.numpy()) <= 1e-5
    assert out.options["ref_eyeblink"] and out.options["ref_pose"]
    with pytest.raises(ShapeError, match="ref_pose must be per-frame coefficient rows"):
        generate_coeffs(src, clip, CoeffConfig(), models=models, ref_pose=video[:, :66])


def test_camera_keypoints():
    np.testing.assert_array_equal(camera_path([15], 4), [15, 15, 15, 15])
    path = camera_path([0, 20, -10], 51)  # legs of 20 and 30 degrees: 2/5 and 3/5 of the clip
    assert path[0] == 0 and path[-1] == -10 and path.max() == 20
    assert int(np.argmax(path)) == 20  # 50 steps * 20 / 50
    assert np.allclose(np.diff(np.abs(np.diff(path))), 0, atol=1e-5)  # constant angular speed
    np.testing.assert_array_equal(camera_path([5, 5, 10], 6), camera_path([5, 10], 6))
    coeffs = Coeffs(
        np.zeros((6, 70), np.float32),
        25.0,
        np.zeros(3840, np.float32),
        options=CoeffConfig(input_yaw=[0, 10], input_roll=[3]).to_json(),
    )
    cams = coeffs.camera_degrees()
    assert set(cams) == {"yaw", "roll"}
    np.testing.assert_allclose(cams["yaw"], [0, 2, 4, 6, 8, 10])
    np.testing.assert_array_equal(cams["roll"], np.full(6, 3.0, np.float32))


# --------------------------------------------------------------------------- progress, errors


def test_progress_and_cancel(models, src, clip):
    calls: list[tuple[int, int]] = []
    generate_coeffs(
        src,
        clip,
        CoeffConfig(chunk_frames=16),
        models=models,
        progress=lambda d, t: calls.append((d, t)),
    )
    total = T25 + T25 - 1  # ExpNet frames + PoseVAE-encoded frames (frame 0 is the reference)
    assert calls[-1] == (total, total)
    assert all(t == total for _, t in calls) and [d for d, _ in calls] == sorted(
        d for d, _ in calls
    )
    assert len(calls) == 3 + 3  # ceil(41 / 16) + ceil(40 / 16)

    class StopError(Exception):
        pass

    def cancel(done: int, total: int) -> None:
        raise StopError

    with pytest.raises(StopError):
        generate_coeffs(src, clip, CoeffConfig(), models=models, progress=cancel)


def test_stage_errors(models, src, clip):
    silent = (np.zeros(16000, np.float32), 16000)
    with pytest.raises(InvalidAudioError, match="silent.*idle mode"):
        generate_coeffs(src, silent, CoeffConfig(), models=models)
    short = (clip[0][:500], 16000)  # 31 ms < 33 ms of one 30 fps frame
    with pytest.raises(InvalidAudioError, match="shorter than one video frame .0.033 s at 30 fps"):
        generate_coeffs(src, short, CoeffConfig(fps=30), models=models)
    with pytest.raises(ShapeError, match=r"\(70,\) / \(73,\) coefficient row"):
        generate_coeffs(src[:60], clip, CoeffConfig(), models=models)
    with pytest.raises(ValueError, match="pose_style must be in 0..45"):
        CoeffConfig(pose_style=46)
    with pytest.raises(ValueError, match="fps must be a positive"):
        CoeffConfig(fps=0)
    with pytest.raises(ValueError, match="idle_seconds must cover at least one frame"):
        CoeffConfig(idle_seconds=0.01)
    with pytest.raises(ValueError, match="input_yaw must hold at least one finite angle"):
        CoeffConfig(input_yaw=[])
    assert CoeffConfig(input_pitch=[1, 2]).input_pitch == (1.0, 2.0)


# --------------------------------------------------------------------------- files and CLI


def test_files_roundtrip(run, tmp_path: Path):
    c30 = run(seed=1, fps=30)
    loaded = Coeffs.load(c30.save(tmp_path / "c.npz"))
    np.testing.assert_array_equal(loaded.coeffs, c30.coeffs)
    assert loaded.fps == 30.0 and loaded.options == c30.options
    mat = loadmat(save_mat(c30, tmp_path / "c.mat"))
    assert [k for k in mat if not k.startswith("__")] == ["coeff_3dmm"]  # official layout
    assert mat["coeff_3dmm"].shape == (49, 70) and mat["coeff_3dmm"].dtype == np.float32
    # Reference rows: official .mat as is, a 30 fps coefficient .npz resampled to 25 fps.
    np.testing.assert_array_equal(load_coeff_rows(tmp_path / "c.mat"), c30.coeffs)
    rows = load_coeff_rows(tmp_path / "c.npz")
    assert rows.shape == (41, 70)  # 49 / 30 s = 1.633 s -> round(40.8) at 25 fps
    np.testing.assert_array_equal(rows, resample_coeffs(c30.coeffs, 30, 25, 41))
    np.savez(tmp_path / "other.npz", something=np.zeros(3))
    with pytest.raises(Exception, match="holds no coefficient rows"):
        load_coeff_rows(tmp_path / "other.npz")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli(tmp_path: Path, weights_dir: Path, src, clip, capsys):
    savemat(tmp_path / "face.mat", {"coeff_3dmm": src[None]})  # official first-frame layout
    np.testing.assert_array_equal(load_source(tmp_path / "face.mat")[:70], src[:70])
    wavfile.write(tmp_path / "speech.wav", 16000, (clip[0] * 32767).astype(np.int16))
    out = tmp_path / "out" / "coeffs.npz"
    common = [
        "coeffs",
        "--face",
        str(tmp_path / "face.mat"),
        "--checkpoint_dir",
        str(weights_dir),
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    rc = _cli(
        common
        + [
            "--driven_audio",
            str(tmp_path / "speech.wav"),
            "--fps",
            "30",
            "--seed",
            "3",
            "--pose_style",
            "5",
            "--input_yaw",
            "0",
            "20",
            "--still",
            "--no-blink",
            "--mat",
            str(tmp_path / "coeffs.mat"),
        ]
    )
    assert rc == 0
    assert "49 frames at 30 fps" in capsys.readouterr().out
    result = Coeffs.load(out)
    assert result.coeffs.shape == (49, 70) and result.fps == 30.0
    assert result.options["input_yaw"] == [0.0, 20.0] and result.options["still"]
    assert not result.options["blink"] and result.options["pose_style"] == 5
    assert loadmat(tmp_path / "coeffs.mat")["coeff_3dmm"].shape == (49, 70)
    # A bad input fails with a message and writes nothing.
    wavfile.write(tmp_path / "silent.wav", 16000, np.zeros(16000, np.int16))
    bad_out = tmp_path / "bad.npz"
    rc = _cli(common[:-1] + [str(bad_out), "--driven_audio", str(tmp_path / "silent.wav")])
    assert rc == 1 and not bad_out.exists()
    assert "silent" in capsys.readouterr().err
    rc = _cli(common + ["--idle_seconds", "1.2"])
    assert rc == 0 and Coeffs.load(out).coeffs.shape == (30, 70)  # 1.2 s * 25 fps
    assert _cli(common) == 1  # neither audio nor idle_seconds
