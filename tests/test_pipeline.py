"""End to end: photo + speech -> MP4 through SadTalkerPipeline and the CLI (issue 6 'Proof').

Rendering costs ~10-40 s per frame on a CPU (256 px; ~4x at 512), so every clip here is 1-3 frames
long, the pipeline and the crop face are made once per module, and the CLI runs in a subprocess
only twice (the error cases call its entry point in this process, where the networks are cached).
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile as sf
from _support import probe_mp4, read_audio, read_frames, write_speech
from PIL import Image

from sadtalker_core import models as registry
from sadtalker_core.cli.main import main
from sadtalker_core.coeffs.generate import CoeffConfig
from sadtalker_core.config import EnhanceConfig
from sadtalker_core.errors import CancelledError
from sadtalker_core.face.extract import ExtractConfig
from sadtalker_core.io.video import VideoWriter
from sadtalker_core.models import loader
from sadtalker_core.pipeline import PipelineConfig, SadTalkerPipeline
from sadtalker_core.render.infer import RenderConfig

REPO = Path(__file__).resolve().parents[1]
OUTSIDE_MARGIN = 8  # px kept between the paste box and the compared background (filter reach)
BLUR = 5  # px box filter before comparing with the source (yuv420p halves the colour resolution)
TOL_CONVERSION = 1.0  # levels (0..255): background vs the source encoded alone, both lossless
TOL_BACKGROUND_MEAN = 3.0  # levels: mean blurred background vs the source picture


# --------------------------------------------------------------------------------------------
# Inputs


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """speech(name, seconds) -> path of a WAV with the loudest ``seconds`` of an espeak-ng line."""
    folder = tmp_path_factory.mktemp("speech")
    return lambda name, seconds: write_speech(folder / f"{name}.wav", seconds)


def audio_seconds(path: Path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


def expected_frames(seconds: float, fps: float) -> int:
    """round(seconds * fps), halves up (the clips below stay clear of .5)."""
    return max(1, math.floor(seconds * fps + 0.5))


@pytest.fixture(scope="module")
def people(fixtures_dir) -> Path:
    return fixtures_dir / "people_0.png"


def config(preprocess: str = "crop", size: int = 256, batch_size: int = 4, **coeffs):
    return PipelineConfig(
        extract=ExtractConfig(preprocess=preprocess, size=size, detector="dlib"),
        coeffs=CoeffConfig(**coeffs),
        render=RenderConfig(batch_size=batch_size),
    )


@pytest.fixture(scope="module")
def pipe(weights_dir):
    return SadTalkerPipeline(weights_dir, "cpu")


@pytest.fixture(scope="module")
def face_crop(pipe, people):
    return pipe.extract(people, config())


# --------------------------------------------------------------------------------------------
# Checks


def probe_frames(path: Path) -> list[np.ndarray]:
    return list(read_frames(path))


def probe(path: Path) -> dict:
    """Streams, sizes, durations, decoded frames and audio of an MP4 (one video, one audio)."""
    info = probe_mp4(path)
    assert info["streams"] == (1, 1), info["streams"]
    return {**info, "frames": probe_frames(path), "audio": read_audio(path)}


def even(n: int) -> int:
    return n + n % 2


def crop_output_size(face, size: int) -> tuple[int, int]:
    """(W, H) of a crop-mode video: width ``size``, height int(size * h / w), even-padded."""
    w, h = face.crop_info.face_size
    return size, even(int(size * h / w))


def check_mp4(path: Path, seconds: float, fps: float, size: tuple[int, int]) -> dict:
    """H.264 yuv420p + AAC, round(seconds * fps) frames of ``size``, audio as long as the video."""
    info = probe(path)
    assert info["vcodec"] == "h264" and info["pix_fmt"] == "yuv420p", info
    assert info["acodec"] == "aac"
    n = expected_frames(seconds, fps)
    assert len(info["frames"]) == n, (len(info["frames"]), n)
    assert info["size"] == size
    assert info["frames"][0].shape == (size[1], size[0], 3)
    assert info["fps"] == pytest.approx(fps)
    assert info["video_s"] == pytest.approx(n / fps, abs=1e-6)
    assert abs(info["audio_s"] - info["video_s"]) <= 1.0 / fps, (info["audio_s"], info["video_s"])
    return info


def files_in(folder: Path) -> list[str]:
    """Every file below ``folder`` (hidden temp files included); [] when it does not exist."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# Library


def test_crop_256_end_to_end(pipe, people, face_crop, speech, tmp_path):
    wav = speech("crop256", 0.11)  # 2.75 frames at 25 fps -> 3 frames, in batches of 2 + 1
    seconds = audio_seconds(wav)
    stages = []
    out = pipe.run(
        people,
        wav,
        tmp_path / "crop.mp4",
        config(batch_size=2),
        progress=lambda stage, done, total: stages.append((stage, done, total)),
    )
    assert out == tmp_path / "crop.mp4"
    info = check_mp4(out, seconds, 25, crop_output_size(face_crop, 256))
    assert files_in(tmp_path) == ["crop.mp4"]  # the temp file was renamed, nothing left
    assert stages[:2] == [("extract", 1, 1), ("coefficients", 1, 1)]
    render = [s for s in stages if s[0] == "render"]
    assert render == [("render", 2, 3), ("render", 3, 3)]
    assert np.abs(info["audio"]).max() > 0.05  # the speech is in the file, not silence
    assert max(float(f.std()) for f in info["frames"]) > 1.0  # real pictures, not a flat fill


def test_second_clip_reuses_the_loaded_networks(pipe, people, face_crop, speech, tmp_path):
    """A second clip (here at 30 fps) in the same process builds and reads no network again."""
    renderer = pipe.renderer(256, "crop")
    coeff_models = pipe.coeff_models(256)
    recon = pipe.extractor.recon
    cached = set(registry.MODELS.keys())
    built = []
    build = loader._build_empty
    opened = []
    open_ckpt = loader.open_checkpoint

    def counting_build(*args, **kwargs):
        built.append(args[0].id)
        return build(*args, **kwargs)

    def counting_open(path):
        opened.append(Path(path).name)
        return open_ckpt(path)

    wav = speech("second30", 0.045)  # 1.35 frames at 30 fps -> 1 frame
    mp = pytest.MonkeyPatch()
    mp.setattr(loader, "_build_empty", counting_build)
    mp.setattr(loader, "open_checkpoint", counting_open)
    try:
        out = pipe.run(people, wav, tmp_path / "second.mp4", config(fps=30))
    finally:
        mp.undo()
    assert built == [] and opened == []
    assert set(registry.MODELS.keys()) == cached
    assert pipe.renderer(256, "crop") is renderer
    assert pipe.coeff_models(256) is coeff_models
    assert pipe.extractor.recon is recon
    check_mp4(out, audio_seconds(wav), 30, crop_output_size(face_crop, 256))


def test_full_mode_pastes_into_the_whole_picture(pipe, fixtures_dir, speech, tmp_path):
    """Full mode: the video has the picture's size and, away from the face box, its pixels.

    Encoded losslessly (crf 0) so that the comparison is exact up to the yuv420p colour
    conversion, which the same picture encoded alone through the same writer shows.
    """
    source = fixtures_dir / "happy1.png"  # RGBA, 221x226: odd width
    cfg = replace(config("full"), crf=0)
    face = pipe.extract(source, cfg)
    wav = speech("full", 0.05)  # 1.25 frames -> 1 frame
    coeffs = pipe.coefficients(face, wav, cfg)
    out = pipe.render_to_file(face, coeffs, tmp_path / "full.mp4", cfg)
    h, w = face.image.shape[:2]
    assert (w, h) == Image.open(source).size
    info = check_mp4(out, audio_seconds(wav), 25, (even(w), even(h)))
    frame = info["frames"][0][:h, :w].astype(np.float32)  # the even-padding column dropped
    with VideoWriter(tmp_path / "source.mp4", crf=0) as writer:
        writer.write(face.image)
    alone = probe_frames(tmp_path / "source.mp4")[0][:h, :w].astype(np.float32)
    src = face.image.astype(np.float32)

    x0, y0, x1, y1 = (round(v) for v in face.crop_info.image_box_original)
    far = np.ones((h, w), bool)  # at least OUTSIDE_MARGIN px outside the paste box
    far[
        max(0, y0 - OUTSIDE_MARGIN) : y1 + OUTSIDE_MARGIN,
        max(0, x0 - OUTSIDE_MARGIN) : x1 + OUTSIDE_MARGIN,
    ] = False
    assert far.sum() > 2000, "the fixture leaves too little background to compare"
    exact = np.abs(frame - alone).max(axis=2)[far]
    assert exact.max() <= TOL_CONVERSION, exact.max()
    blurred = np.abs(cv2.blur(frame, (BLUR, BLUR)) - cv2.blur(src, (BLUR, BLUR)))[far]
    assert blurred.mean() <= TOL_BACKGROUND_MEAN, blurred.mean()
    # ... while the face box holds the rendered face, not the source picture
    box = np.abs(frame[y0:y1, x0:x1] - src[y0:y1, x0:x1]).mean()
    assert box > 4 * TOL_BACKGROUND_MEAN, box


@pytest.mark.slow
def test_crop_512_short_clip(pipe, people, tmp_path):
    cfg = config(size=512, batch_size=2, idle_seconds=0.04)  # 1 frame (~40-100 s on a CPU)
    face = pipe.extract(people, cfg)
    assert face.size == 512 and face.crop.shape == (512, 512, 3)
    coeffs = pipe.coefficients(face, None, cfg)
    out = pipe.render_to_file(face, coeffs, tmp_path / "crop512.mp4", cfg)
    check_mp4(out, 0.04, 25, crop_output_size(face, 512))
    assert pipe.renderer(512, "crop") is not pipe.renderer(256, "crop")


def test_cancel_leaves_no_file(pipe, face_crop, tmp_path):
    # 2 frames in 2 batches; at 5 fps one frame carries enough audio for the muxer to start the
    # temp file on disk during the first batch
    cfg = config(batch_size=1, fps=5, idle_seconds=0.4)
    coeffs = pipe.coefficients(face_crop, None, cfg)
    assert coeffs.num_frames == 2
    folder = tmp_path / "out"
    seen = []

    def should_cancel() -> bool:
        """Render the first batch, then cancel once its frame is being written to disk."""
        if seen:
            deadline = time.monotonic() + 30.0  # the writer may encode in a worker thread
            while not files_in(folder) and time.monotonic() < deadline:
                time.sleep(0.05)
        seen.append(files_in(folder))
        return len(seen) > 1

    with pytest.raises(CancelledError):
        pipe.render_to_file(
            face_crop, coeffs, folder / "cancelled.mp4", cfg, should_cancel=should_cancel
        )
    assert len(seen) == 2
    assert any(name.endswith(".partial.mp4") for name in seen[1]), seen  # it was being written
    assert files_in(folder) == []  # ... and nothing is left, not even the temp file


# --------------------------------------------------------------------------------------------
# Command line


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    return subprocess.run(
        [sys.executable, "-m", "sadtalker_core", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_cli_official_flags(weights_dir, people, face_crop, speech, tmp_path):
    wav = speech("cli", 0.05)  # 1 frame
    results = tmp_path / "results"
    proc = _cli(
        "--source_image", str(people),
        "--driven_audio", str(wav),
        "--checkpoint_dir", str(weights_dir),
        "--detector", "dlib",
        "--result_dir", str(results),
        "--batch_size", "4",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = Path(proc.stdout.strip().splitlines()[-1])
    assert out == results / "people_0__cli.mp4" and out.is_file()
    assert files_in(results) == ["people_0__cli.mp4"]
    check_mp4(out, audio_seconds(wav), 25, crop_output_size(face_crop, 256))


def test_cli_batch_csv_loads_the_models_once(weights_dir, people, face_crop, speech, tmp_path):
    clips = [speech("batch_a", 0.05), speech("batch_b", 0.05)]  # 1 frame each
    table = clips[0].parent / "jobs.csv"  # audio given relative to the CSV's folder
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "audio"])
        writer.writerows([[str(people), clip.name] for clip in clips])
    results = tmp_path / "results"
    proc = _cli(
        "--batch", str(table),
        "--checkpoint_dir", str(weights_dir),
        "--detector", "dlib",
        "--result_dir", str(results),
        "--batch_size", "4",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = ["people_0__batch_a.mp4", "people_0__batch_b.mp4"]
    assert proc.stdout.strip().splitlines() == [str(results / n) for n in names]
    assert files_in(results) == names
    for name, clip in zip(names, clips):
        check_mp4(results / name, audio_seconds(clip), 25, crop_output_size(face_crop, 256))
    loads = [line for line in proc.stderr.splitlines() if " loaded " in f" {line}"]
    for network in ("generator", "kp_extractor", "mapping", "audio2exp", "audio2pose"):
        assert sum(f"loaded {network} from" in line for line in loads) == 1, loads


def test_cli_batch_spreads_clips_over_device_workers(
    weights_dir, people, face_crop, speech, capsys, tmp_path
):
    """``--devices``: one worker per device takes clips from one queue (two CPU workers here,
    standing in for two GPUs); every clip is written, a failing clip does not stop the others."""
    clips = [speech(f"workers_{k}", 0.05) for k in range(3)]  # 1 frame each
    table = tmp_path / "jobs.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([[str(people), str(clip)] for clip in clips])
        writer.writerow([str(people), str(tmp_path / "missing.wav")])
    results = tmp_path / "results"
    rc, out, err = _run_main(
        capsys,
        "--batch", str(table),
        "--checkpoint_dir", str(weights_dir),
        "--detector", "dlib",
        "--result_dir", str(results),
        "--devices", "cpu,cpu",
    )  # fmt: skip
    assert rc == 1 and "missing.wav" in err  # the failed clip is reported, the others are done
    names = sorted(f"people_0__workers_{k}.mp4" for k in range(3))
    assert files_in(results) == names
    # the clip with the missing audio is dropped before any network loads
    assert out.splitlines()[0] == "3 clips on 2 workers: cpu, cpu"
    assert sorted(line.split()[0] for line in out.splitlines()[1:]) == [
        str(results / n) for n in names
    ]
    for name, clip in zip(names, clips):
        check_mp4(results / name, audio_seconds(clip), 25, crop_output_size(face_crop, 256))
    rc, out, err = _run_main(capsys, "--batch", str(table), "--devices", "cpu,gpu7")
    assert rc == 1 and "--devices: 'gpu7' is not a torch device" in err and out == ""


def _run_main(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI's entry point in this process (networks already cached: no reload cost)."""
    rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_bad_inputs_exit_1_without_output(weights_dir, people, face_crop, capsys, tmp_path):
    results = tmp_path / "results"
    common = ("--checkpoint_dir", str(weights_dir), "--detector", "dlib", "--cpu")
    common += ("--result_dir", str(results))
    missing = tmp_path / "nowhere" / "speech.wav"
    rc, out, err = _run_main(
        capsys, "--source_image", str(people), "--driven_audio", str(missing), *common
    )
    assert rc == 1 and out == ""
    assert err.startswith("error: ") and "not found" in err and str(missing) in err, err

    blank = tmp_path / "blank.png"  # a picture without a face
    Image.fromarray(np.full((160, 160, 3), 128, np.uint8)).save(blank)
    wav = tmp_path / "speech.wav"
    sf.write(str(wav), 0.5 * np.sin(np.linspace(0, 400, 1600)).astype(np.float32), 16000)
    rc, out, err = _run_main(
        capsys, "--source_image", str(blank), "--driven_audio", str(wav), *common
    )
    assert rc == 1 and out == ""
    assert err.startswith("error: No face found") and "blank.png" in err, err
    assert files_in(results) == []


def test_cli_enhancer_without_its_weights_stops_before_any_work(
    weights_dir, people, speech, capsys, tmp_path
):
    results = tmp_path / "results"
    rc, out, err = _run_main(
        capsys,
        "--source_image", str(people),
        "--driven_audio", str(speech("enhancer", 0.05)),
        "--checkpoint_dir", str(weights_dir),
        "--result_dir", str(results),
        "--enhancer", "gfpgan",
    )  # fmt: skip
    assert rc == 1 and out == ""
    assert err.startswith("error: ") and "GFPGANv1.4.pth" in err, err
    assert registry.FILES["GFPGANv1.4.pth"].url in err
    assert files_in(results) == []


def test_cli_background_enhancer_needs_the_face_enhancer(weights_dir, people, capsys, tmp_path):
    rc, out, err = _run_main(
        capsys,
        "--source_image", str(people),
        "--driven_audio", str(tmp_path / "speech.wav"),
        "--checkpoint_dir", str(weights_dir),
        "--background_enhancer", "realesrgan",
    )  # fmt: skip
    assert rc == 1 and out == ""
    assert "--background_enhancer works together with --enhancer" in err, err


def test_cli_full_mode_with_face_and_background_enhancers(
    weights_dir, restorer_dir, realesrgan_file, fixtures_dir, speech, capsys, monkeypatch, tmp_path
):
    """Official enhancer path end to end: the whole photo, faces restored, the background
    upscaled by Real-ESRGAN x2 (official file layout), 2x the photo's size."""
    monkeypatch.setenv(
        registry.ENV_CHECKPOINTS, os.pathsep.join(map(str, (restorer_dir, realesrgan_file.parent)))
    )
    photo = tmp_path / "small.png"
    Image.open(fixtures_dir / "people_0.png").convert("RGB").reduce(2).save(photo)
    w, h = Image.open(photo).size
    wav = speech("background", 0.05)  # 1 frame
    out = tmp_path / "background.mp4"
    rc, stdout, err = _run_main(
        capsys,
        "--source_image", str(photo),
        "--driven_audio", str(wav),
        "--checkpoint_dir", str(weights_dir),
        "--preprocess", "full",
        "--detector", "dlib",
        "--enhancer", "gfpgan",
        "--background_enhancer", "realesrgan",
        "--out", str(out),
        "--cpu",
    )  # fmt: skip
    assert rc == 0, err
    check_mp4(out, audio_seconds(wav), 25, (2 * w, 2 * h))


def test_enhancer_places_faces_from_the_renderer_without_detecting(
    weights_dir, restorer_dir, face_crop, speech, monkeypatch
):
    """In a run the enhancer takes the face position from the renderer's keypoints: no face
    detector is built or run on the rendered frames."""
    from sadtalker_core.enhance import restore

    def no_detector(self):
        raise AssertionError("the enhancer looked for faces although the renderer knows them")

    monkeypatch.setattr(restore.FaceEnhancer, "detector", property(no_detector))
    enhanced = SadTalkerPipeline([weights_dir, restorer_dir], "cpu")
    cfg = replace(config(), enhance=EnhanceConfig(upscale=1, detector="dlib"))
    coeffs = enhanced.coefficients(face_crop, speech("tracked", 0.05), cfg)
    (frames,) = list(enhanced.iter_frames(face_crop, coeffs, cfg))
    plain = np.concatenate(list(enhanced.iter_frames(face_crop, coeffs, config())))
    assert frames.shape == plain.shape and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - plain.astype(int)).mean() > 1.0  # the face was restored


def test_cli_enhancer_restores_and_doubles_the_frames(
    weights_dir, restorer_dir, people, face_crop, speech, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv(registry.ENV_CHECKPOINTS, str(restorer_dir))
    wav = speech("enhanced", 0.05)  # 1 frame
    out = tmp_path / "enhanced.mp4"
    rc, stdout, err = _run_main(
        capsys,
        "--source_image", str(people),
        "--driven_audio", str(wav),
        "--checkpoint_dir", str(weights_dir),
        "--detector", "dlib",
        "--enhancer", "gfpgan",
        "--out", str(out),
        "--cpu",
    )  # fmt: skip
    assert rc == 0, err
    assert stdout.strip() == str(out)
    fw, fh = face_crop.crop_info.face_size
    check_mp4(out, audio_seconds(wav), 25, (512, 2 * int(256 * fh / fw)))  # 2x the rendered frame


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--driven_audio", "a.wav", "--idle_seconds", "1"), "not both"),
        (("--driven_audio", "a.wav", "--pose_style", "46"), "pose_style"),
        (("--driven_audio", "a.wav", "--batch_size", "0"), "batch_size"),
        (("--idle_seconds", "0.001"), "idle_seconds"),
    ],
)
def test_cli_bad_options_exit_1_before_loading(args, message, people, capsys, tmp_path):
    rc, out, err = _run_main(
        capsys, "--source_image", str(people), "--result_dir", str(tmp_path / "r"), *args
    )
    assert rc == 1 and out == ""
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    assert files_in(tmp_path) == []


def test_cli_malformed_batch_csv(capsys, tmp_path):
    table = tmp_path / "jobs.csv"
    table.write_text("image,audio\nface.png\n")
    rc, out, err = _run_main(capsys, "--batch", str(table), "--result_dir", str(tmp_path / "r"))
    assert rc == 1 and out == ""
    assert err.startswith("error: Line 2 of") and "image,audio" in err, err


def test_reference_video_rows_use_its_largest_face_and_warn_off_25_fps(
    pipe, people, tmp_path, caplog
):
    """``reference_rows`` (CLI, ComfyUI node and A1111 tab): the photo's face_index does not
    apply to the reference video, and a 30 fps video is named in a warning (its motion is used
    frame by frame, as officially)."""
    img = cv2.resize(np.asarray(Image.open(people).convert("RGB")), (256, 256))
    path = tmp_path / "ref30.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=30)
        s.width, s.height, s.pix_fmt = 256, 256, "yuv420p"
        for _ in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    cfg = PipelineConfig(extract=ExtractConfig(detector="dlib", face_index=2))  # 3rd face
    with caplog.at_level("WARNING", logger="sadtalker_core.pipeline"):
        rows = pipe.reference_rows(path, cfg)
    assert rows.shape == (3, 70) and np.isfinite(rows).all()
    warnings = [r.getMessage() for r in caplog.records if r.name == "sadtalker_core.pipeline"]
    assert len(warnings) == 1 and "ref30.mp4 runs at 30.00 fps" in warnings[0]
