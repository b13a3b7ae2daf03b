"""A run stopped by SIGTERM leaves no file; input files are checked before any network loads (in
the library, the command line and the A1111 studio); the library's progress bar and callback."""

from __future__ import annotations

import io
import logging
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sadtalker_core import (
    CoeffConfig,
    ExtractConfig,
    InvalidAudioError,
    InvalidImageError,
    InvalidVideoError,
    PipelineConfig,
    RenderConfig,
    SadTalkerPipeline,
    check_inputs,
)
from sadtalker_core.cli.main import main
from sadtalker_core.models import MODELS
from sadtalker_core.progress import ProgressBar, run_progress

REPO = Path(__file__).resolve().parents[1]


def every_file(folder: Path) -> list[str]:
    """Every file below ``folder``, hidden partial files included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def voiced(fixtures_dir, tmp_path_factory):
    """voiced(seconds) -> a WAV of the fixture's speech from 1.0 s on."""
    folder = tmp_path_factory.mktemp("voiced")
    wav, rate = sf.read(str(fixtures_dir / "RD_Radio31_000.wav"), dtype="float32")

    def cut(seconds: float) -> Path:
        path = folder / f"speech_{seconds:g}.wav"
        sf.write(str(path), wav[rate : rate + int(seconds * rate)], rate)
        return path

    return cut


# ---- SIGTERM -------------------------------------------------------------------------------


def test_sigterm_mid_render_leaves_no_file(weights_dir, fixtures_dir, voiced, tmp_path):
    """The CLI rendering 25 frames one by one gets SIGTERM once its partial MP4 exists: it
    stops like Ctrl-C (exit 143, the shell's code for SIGTERM) and the result folder is empty."""
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sadtalker_core",
            "--source_image",
            str(fixtures_dir / "people_0.png"),
        ]
        + ["--driven_audio", str(voiced(1.0)), "--result_dir", str(results), "--out"]
        + [str(results / "term.mp4"), "--checkpoint_dir", str(weights_dir), "--detector", "dlib"]
        + ["--batch_size", "1", "--compile", "off", "--cpu"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not any(".partial." in name for name in every_file(results) if results.exists()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no partial file appeared"
            time.sleep(0.2)
        time.sleep(1.0)  # mid-render: the first frames are being made
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "interrupted: no partial video was kept" in err, err
    assert "Traceback" not in err, err
    assert every_file(results) == [], every_file(results)


WRITER_SCRIPT = """
import sys, time
import numpy as np
from sadtalker_core.io.video import VideoWriter, discard_partials_on_signals
writer = VideoWriter(sys.argv[1], fps=25)
writer.write(np.zeros((8, 64, 64, 3), np.uint8))
{action}
"""


def _writer_process(tmp_path: Path, action: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "out" / "clip.mp4"
    script = WRITER_SCRIPT.format(action=textwrap.dedent(action))
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, out.parent


def test_host_killed_by_sigterm_leaves_no_partial(tmp_path):
    """A host that dies on SIGTERM (ComfyUI, A1111: the default action) with a render in
    progress: discard_partials_on_signals removes the partial file, then the process ends by the
    signal as before."""
    proc, folder = _writer_process(
        tmp_path,
        "assert discard_partials_on_signals()\nprint('ready', flush=True)\ntime.sleep(120)",
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        assert [n for n in every_file(folder) if ".partial." in n], every_file(folder)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGTERM
    assert every_file(folder) == []


def test_writer_left_open_at_exit_leaves_no_partial(tmp_path):
    """A host shutting down normally (uvicorn, SystemExit) while a daemon thread renders: the
    interpreter's exit removes the partial file of a writer that was never closed."""
    proc, folder = _writer_process(tmp_path, "sys.exit(0)")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert every_file(folder) == []


# ---- inputs checked before any network loads ------------------------------------------------


@pytest.fixture
def loads():
    """Names of the networks the model cache loads while the test runs."""
    events: list[str] = []
    unsubscribe = MODELS.subscribe(lambda event, entry: events.append(f"{event} {entry.key}"))
    yield events
    unsubscribe()


def test_library_reports_bad_inputs_before_loading_anything(
    weights_dir, fixtures_dir, tmp_path, loads
):
    people = fixtures_dir / "people_0.png"
    pipe = SadTalkerPipeline(weights_dir, "cpu")
    cfg = PipelineConfig(extract=ExtractConfig(detector="dlib"))
    cases = [
        (people, tmp_path / "missing.wav", InvalidAudioError, "Audio file not found"),
        (people, people, InvalidAudioError, "people_0.png has no audio track"),
        (people, tmp_path, InvalidAudioError, "it is a folder"),
        (fixtures_dir / "RD_Radio31_000.wav", people, InvalidImageError, "cannot be decoded"),
        (tmp_path / "missing.png", people, InvalidImageError, "does not exist"),
    ]
    for image, audio, error, message in cases:
        start = time.perf_counter()
        with pytest.raises(error, match=message):
            pipe.run(image, audio, tmp_path / "out.mp4", cfg, progress=False)
        assert time.perf_counter() - start < 2.0  # headers only, no face detection
    assert loads == []  # no network was loaded (nor restored) for any of them
    assert every_file(tmp_path) == []


def test_check_inputs_reads_headers_only(fixtures_dir, voiced, tmp_path):
    rows = tmp_path / "rows.npz"  # coefficient files are read where they are used
    rows.write_bytes(b"x")
    check_inputs(
        fixtures_dir / "people_0.png", voiced(0.2), fixtures_dir / "WDA_KatieHill_000.mp4", rows
    )
    check_inputs(np.zeros((64, 64, 3), np.uint8), (np.zeros(1600, np.float32), 16000))
    check_inputs(None, fixtures_dir / "WDA_KatieHill_000.mp4")  # a video's sound track
    with pytest.raises(InvalidVideoError, match="ref_pose: .*speech_0.2.wav has no video track"):
        check_inputs(ref_pose=voiced(0.2))
    with pytest.raises(InvalidVideoError, match="ref_eyeblink: .* does not exist"):
        check_inputs(ref_eyeblink=tmp_path / "blinks.mp4")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InvalidAudioError, match="empty.wav"):
        check_inputs(driven_audio=empty)


def test_cli_reports_a_bad_audio_before_the_models_and_the_enhancer(
    fixtures_dir, tmp_path, capsys, loads
):
    """No weights at all and an enhancer asked for: the wrong audio path is what is reported
    (before, the enhancer's missing file or the face detector came first)."""
    empty = tmp_path / "no_weights"
    empty.mkdir()
    missing = tmp_path / "speach.wav"
    rc = main(
        ["--source_image", str(fixtures_dir / "people_0.png"), "--driven_audio", str(missing)]
        + ["--checkpoint_dir", str(empty), "--enhancer", "gfpgan", "--result_dir", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith(f"error: Audio file not found: {missing}"), err
    rc = main(
        ["--source_image", str(fixtures_dir / "people_0.png"), "--driven_audio", str(missing)]
        + ["--checkpoint_dir", str(empty), "--ref_pose", str(fixtures_dir / "RD_Radio31_000.wav")]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "ref_pose: RD_Radio31_000.wav has no video track" in err, err
    assert loads == []


def test_a1111_studio_checks_inputs_before_building_the_pipeline(fixtures_dir, tmp_path):
    sys.path.insert(0, str(REPO))
    from sadtalker_webui.studio import Studio

    studio = Studio()
    with pytest.raises(InvalidAudioError, match="people_0.png has no audio track"):
        studio.generate(fixtures_dir / "people_0.png", fixtures_dir / "people_0.png", {})
    with pytest.raises(InvalidVideoError, match="ref_eyeblink: .* does not exist"):
        studio.generate(
            fixtures_dir / "people_0.png",
            fixtures_dir / "RD_Radio31_000.wav",
            {},
            ref_eyeblink=str(tmp_path / "blinks.mp4"),
        )
    assert studio.pipelines_built == 0


# ---- progress -------------------------------------------------------------------------------


def _one_frame_run(weights_dir, fixtures_dir, voiced, out: Path, **kwargs) -> Path:
    pipe = SadTalkerPipeline(weights_dir, "cpu")  # the networks are cached process-wide
    cfg = PipelineConfig(
        extract=ExtractConfig(detector="dlib"),
        coeffs=CoeffConfig(seed=0),
        render=RenderConfig(compile="off"),
    )
    return pipe.run(fixtures_dir / "people_0.png", voiced(0.04), out, cfg, **kwargs)


def test_progress_callback_and_bar(weights_dir, fixtures_dir, voiced, tmp_path, caplog):
    calls: list[tuple[str, int, int]] = []
    with caplog.at_level(logging.INFO, logger="sadtalker_core"):
        _one_frame_run(
            weights_dir,
            fixtures_dir,
            voiced,
            tmp_path / "a.mp4",
            progress=lambda *a: calls.append(a),
        )
    assert calls[:2] == [("extract", 1, 1), ("coefficients", 1, 1)], calls
    assert calls[2:] == [("render", 1, 1)], calls
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("sadtalker_core")]
    for stage in ("extract: the face of", "coefficients: ", "render: 1 frames at 25 fps"):
        assert any(m.startswith(stage) for m in logged), logged

    # progress=True: one tqdm bar per stage on stderr, each drawn to 100 %
    err = io.StringIO()
    real = sys.stderr
    sys.stderr = err
    try:
        _one_frame_run(weights_dir, fixtures_dir, voiced, tmp_path / "b.mp4", progress=True)
    finally:
        sys.stderr = real
    text = err.getvalue()
    assert "extract: 100%" in text and "1/1" in text, text
    assert "coefficients: 100%" in text and "step" in text, text
    assert "render: 100%" in text and "frame" in text, text


def test_progress_default_follows_the_session(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert run_progress(None) is None  # a pipe or a log file: silent
    monkeypatch.setattr(sys, "stderr", Tty())
    assert isinstance(run_progress(None), ProgressBar)  # a terminal: a bar
    assert run_progress(False) is None

    def callback(stage, done, total):
        return None

    assert run_progress(callback) is callback
    with pytest.raises(TypeError, match="progress must be a callback"):
        run_progress("yes")


def test_signals_cannot_be_hooked_off_the_main_thread():
    import threading

    from sadtalker_core.io.video import discard_partials_on_signals

    result = []
    t = threading.Thread(target=lambda: result.append(discard_partials_on_signals()))
    t.start()
    t.join()
    assert result == [False]
