"""``render`` from saved stages, ``check-weights`` telling where each file is, ``--batch`` CSV
paths and the coefficient progress bar (the CLI commands of README's stage-by-stage flow)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from sadtalker_core.cli.generate import _jobs
from sadtalker_core.cli.main import build_parser, main
from sadtalker_core.models import ENV_CHECKPOINTS, default_checkpoint_dirs
from sadtalker_core.models.locate import ENV_DEFAULT_CHECKPOINTS
from sadtalker_core.paste import PasteBack
from sadtalker_core.types import Coeffs, Face

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stages(weights_dir, fixtures_dir, tmp_path_factory) -> tuple[Path, Path]:
    """face.npz (full mode, dlib) and coeffs.npz of one frame, written by the CLI."""
    folder = tmp_path_factory.mktemp("stages")
    wav, rate = sf.read(str(fixtures_dir / "RD_Radio31_000.wav"), dtype="float32")
    sf.write(str(folder / "speech.wav"), wav[rate : rate + rate // 20], rate)  # 0.05 s: 1 frame
    common = ["--checkpoint_dir", str(weights_dir)]
    face, coeffs = folder / "face.npz", folder / "coeffs.npz"
    args = ["--source_image", str(fixtures_dir / "people_0.png"), "--preprocess", "full"]
    assert main(["extract", *args, "--detector", "dlib", "--out", str(face), *common]) == 0
    args = ["--face", str(face), "--driven_audio", str(folder / "speech.wav")]
    assert main(["coeffs", *args, "--out", str(coeffs), *common]) == 0
    return face, coeffs


def test_render_writes_the_saved_stages_without_warnings(stages, weights_dir, tmp_path, capsys):
    face, coeffs = stages
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. PyTorch's "NumPy array is not writable"
        rc = main(
            ["render", "--face", str(face), "--coeffs", str(coeffs), "--blend", "feather"]
            + ["--result_dir", str(tmp_path / "r"), "--checkpoint_dir", str(weights_dir)]
        )
    out = capsys.readouterr().out
    assert rc == 0
    path = tmp_path / "r" / "face__coeffs.mp4"  # default name: <face>__<coeffs>.mp4
    assert out.strip() == str(path)
    image = Face.load(face).image
    with av.open(str(path)) as c:
        assert len(c.streams.audio) == 1
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == Coeffs.load(coeffs).num_frames == 1  # 0.05 s * 25 fps -> 1 frame
    assert frames[0].shape[:2] == (image.shape[0] // 2 * 2, image.shape[1] // 2 * 2)  # pasted


def test_paste_back_accepts_a_read_only_source(stages):
    face = Face.load(stages[0])
    face.image.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PasteBack(face)


@pytest.mark.parametrize(
    ("swap", "extra", "message"),
    [
        (False, ["--face", "missing.npz"], "face file missing.npz does not exist"),
        (True, [], "is not a sadtalker-face"),
        (False, ["--background_enhancer", "realesrgan"], "works together with --enhancer"),
        (False, ["--batch_size", "0"], "batch_size"),
    ],
)
def test_render_bad_input_exit_1_without_output(
    stages, swap, extra, message, tmp_path, capsys, monkeypatch
):
    face, coeffs = stages[::-1] if swap else stages
    monkeypatch.chdir(tmp_path)
    rc = main(["render", "--face", str(face), "--coeffs", str(coeffs), "--out", "x.mp4", *extra])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_render_shares_the_render_options_of_generate():
    def options(command: str) -> set[str]:
        sub = build_parser()._subparsers._group_actions[0].choices[command]
        return {s for a in sub._actions for s in a.option_strings}

    shared = {"--batch_size", "--precision", "--blend", "--crf", "--enhancer", "--device"}
    shared |= {"--enhance_upscale", "--background_enhancer", "--cpu", "--checkpoint_dir"}
    assert shared <= options("render") and shared <= options("generate")


def test_check_weights_says_where_each_file_comes_from(weights_dir, tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar"):
        os.link(weights_dir / name, elsewhere / name)
    monkeypatch.setenv(ENV_CHECKPOINTS, str(elsewhere))
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["check-weights", str(empty)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"[1] {empty}  (the folder you gave; no checkpoint found here)" in out
    assert f"[2] {elsewhere}  (2 file(s) found here)" in out
    assert f"found     in [2] {elsewhere}" in out
    assert f"Note: nothing was found in {empty} (the folder you gave)" in out
    assert "Preprocess modes ready: crop, extcrop, resize\n" in out
    assert "Ready to render at: 256 px (face detector: dlib)." in out


def test_each_searched_folder_is_listed_once(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_CHECKPOINTS, raising=False)
    monkeypatch.delenv(ENV_DEFAULT_CHECKPOINTS)  # the pack's checkpoints/ (conftest.py)
    monkeypatch.chdir(REPO)
    dirs = default_checkpoint_dirs(["checkpoints", str(REPO / "checkpoints")])
    assert dirs == [REPO / "checkpoints"]
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    assert default_checkpoint_dirs([tmp_path, link])[0] == tmp_path
    assert len(default_checkpoint_dirs([tmp_path, link])) == 2  # + the pack's checkpoints/


def test_batch_csv_paths_are_relative_to_the_csv(tmp_path, monkeypatch):
    folder = tmp_path / "jobs"
    folder.mkdir()
    table = folder / "list.csv"
    table.write_text(
        "image,audio,output\n# a comment\n"
        "a.png,sound/a.wav,\nb.png,/abs/b.wav,out/b.mp4\nc.png,c.wav,/abs/c.mp4\n"
    )
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["generate", "--batch", "jobs/list.csv", "--result_dir", "r"])
    assert _jobs(args) == [
        (folder / "a.png", folder / "sound" / "a.wav", Path("r") / "a__a.mp4"),
        (folder / "b.png", Path("/abs/b.wav"), folder / "out" / "b.mp4"),
        (folder / "c.png", folder / "c.wav", Path("/abs/c.mp4")),
    ]


def test_batch_folder_pairs_same_named_files(tmp_path):
    for name in ("anna.png", "anna.wav", "bob.jpg", "bob.mp3", "lonely.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    args = argparse.Namespace(batch=tmp_path, result_dir=Path("out"), idle_seconds=None)
    assert _jobs(args) == [
        (tmp_path / "anna.png", tmp_path / "anna.wav", Path("out") / "anna.mp4"),
        (tmp_path / "bob.jpg", tmp_path / "bob.mp3", Path("out") / "bob.mp4"),
    ]


def test_coefficient_bar_counts_steps_and_is_drawn_once(stages, weights_dir, tmp_path):
    face, _ = stages
    speech = face.parent / "speech.wav"
    proc = subprocess.run(
        [sys.executable, "-m", "sadtalker_core", "coeffs", "--face", str(face)]
        + ["--driven_audio", str(speech), "--out", str(tmp_path / "c.npz")]
        + ["--checkpoint_dir", str(weights_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    finished = [s for s in re.split(r"[\r\n]", proc.stderr) if "100%" in s]
    assert len(finished) == 1, proc.stderr  # not drawn again under the stage's log line
    assert finished[0].startswith("coefficients") and "step/s" in finished[0], finished
    rows = np.load(tmp_path / "c.npz")["coeffs"]
    assert rows.shape == (1, 70), rows.shape
