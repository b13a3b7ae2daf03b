"""README's commands, pasted as written after the quickstart, in a fresh clone, offline.

The repository is cloned (its committed HEAD) into a temporary folder; the stand-in checkpoints
go where the quickstart puts the real ones (``checkpoints/``), ``examples/speech.wav`` is cut to
0.05 s (one frame at 25 fps) and the network is refused. Then every ``sadtalker`` line of
README's ``bash`` blocks runs in order, as in a terminal where ``source .venv/bin/activate`` was
run: ``sadtalker`` and ``python`` come first on PATH (``sadtalker`` runs the clone's code). Face
detector: ``auto``, which finds dlib (no official detector files are present).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import av
import pytest
from _support import clone_with_weights, offline_env, readme_blocks

REPO = Path(__file__).resolve().parents[1]


def activated_env(clone: Path, tmp: Path) -> dict[str, str]:
    """What ``source .venv/bin/activate`` gives, offline: the test venv's ``python`` first on
    PATH and a ``sadtalker`` command running the clone's package."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "sadtalker"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m sadtalker_core "$@"\n')
    shim.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    return offline_env(
        PATH=path, VIRTUAL_ENV=str(Path(sys.executable).parents[1]), PYTHONPATH=str(clone)
    )


def readme_commands(text: str) -> list[list[str]]:
    """Every ``sadtalker`` command of README's bash blocks, in order, as argv lists; optional
    ``[...]`` arguments of a synopsis are left out."""
    commands = []
    for block in readme_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(re.sub(r"\[[^\]]*\]", "", line), comments=True)
            if argv and argv[0] == "sadtalker":
                commands.append(argv)
    return commands


def kind(argv: list[str]) -> str:
    if argv[1] in ("extract", "coeffs", "render", "check-weights", "download-weights"):
        return argv[1]
    return "batch" if "--batch" in argv else "generate"


def video_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        assert len(c.streams.audio) == 1, f"{path} has no sound track"
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def clone(tmp_path_factory, weights_dir) -> Path:
    return clone_with_weights(tmp_path_factory.mktemp("readme") / "ComfyUI-SadTalker", weights_dir)


def test_readme_commands_run_as_written(clone, tmp_path):
    text = (clone / "README.md").read_text()
    assert "source .venv/bin/activate" in text
    commands = readme_commands(text)
    kinds = [kind(c) for c in commands]
    # The documented flows: one step, stage by stage, batch CSV, the weights check.
    for expected in ("generate", "extract", "coeffs", "render", "batch", "check-weights"):
        assert expected in kinds, (expected, kinds)
    assert kinds.index("extract") < kinds.index("coeffs") < kinds.index("render")
    (table,) = readme_blocks(text, "csv")
    (clone / "jobs.csv").write_text(table)  # README: "jobs.csv, in this folder"
    env = activated_env(clone, tmp_path)

    for argv in commands:
        if kind(argv) == "download-weights":
            continue  # offline by design; tests/test_quickstart.py covers it
        proc = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        shown = f"$ {shlex.join(argv)}\n{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == 0, shown
        assert "Traceback" not in proc.stderr and "warning" not in proc.stderr.lower(), shown
        if kind(argv) == "check-weights":
            assert "Ready to render at: 256 px" in proc.stdout, shown
            assert f"in [1] {(clone / 'checkpoints').resolve()}" in proc.stdout, shown
            continue
        if kind(argv) in ("extract", "coeffs"):
            assert (clone / argv[argv.index("--out") + 1]).is_file(), shown
            continue
        if "--out" in argv:
            written = [clone / argv[argv.index("--out") + 1]]
        else:  # generate / render / batch print the videos they wrote, one per line
            written = [Path(line) for line in proc.stdout.split()]
        written = [p if p.is_absolute() else clone / p for p in written]
        if kind(argv) == "batch":
            # the CSV's relative outputs are relative to its folder; the others go to --result_dir
            assert sorted(written) == [
                clone / "results" / "portrait__speech.mp4",
                clone / "results" / "portrait_from_csv.mp4",
            ], shown
        for path in written:
            assert path.is_file(), shown
            assert video_frames(path) == 1, shown  # 0.05 s * 25 fps = 1.25 -> 1 frame
    assert (clone / "face.npz").is_file() and (clone / "coeffs.npz").is_file()
