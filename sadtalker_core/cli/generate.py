"""``python -m sadtalker_core [generate] --source_image IMG --driven_audio AUDIO``: the official CLI's flags."""

from __future__ import annotations

import argparse
import csv
import functools
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ..coeffs.files import load_coeff_rows
from ..config import (
    AUTO,
    BLENDS,
    COMPILE_MODES,
    DETECTORS,
    ENHANCER_NAMES,
    FIELD_HELP,
    PRECISIONS,
    PREPROCESS_MODES,
    EnhanceConfig,
    ExtractConfig,
    PipelineConfig,
    RenderConfig,
)
from ..errors import CancelledError, SadTalkerError
from ..io.inputs import check_inputs
from ..pipeline import SadTalkerPipeline
from .coeffs import add_motion_arguments, coeff_config
from .common import TerminalBar, checkpoint_dirs, say

_PIPELINE = PipelineConfig()


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {
    ".wav",
    ".mp3",
    ".flac",
    ".ogg",
    ".m4a",
    ".aac",
    ".opus",
    ".mp4",
    ".mov",
    ".mkv",
    ".webm",
}


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``generate`` sub-command (also the default when the first argument is a flag)."""
    p = subparsers.add_parser(
        "generate",
        help="photo + speech -> talking-head MP4 (the default command)",
        description="Render a talking head. Flags follow the official SadTalker CLI. Exit status: "
        "0 written, 1 bad input or missing checkpoint, 130 interrupted.",
    )
    src = p.add_argument_group("inputs")
    src.add_argument("--source_image", type=Path, help="portrait picture")
    src.add_argument(
        "--driven_audio", type=Path, help="speech (wav, mp3, flac, ogg, m4a, or a video's audio)"
    )
    src.add_argument(
        "--batch",
        type=Path,
        help="folder of same-named image/audio pairs, or a CSV of image,audio[,output] rows "
        "(relative paths: from the CSV's folder; no output: --result_dir/IMAGE__AUDIO.mp4)",
    )
    src.add_argument(
        "--ref_eyeblink", type=Path, help="video (or coefficient .npz/.mat) whose blinks to copy"
    )
    src.add_argument(
        "--ref_pose", type=Path, help="video (or coefficient .npz/.mat) whose head motion to copy"
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--result_dir", type=Path, default=Path("results"), help="folder for the videos"
    )
    out.add_argument("--out", type=Path, help="exact output path (single clip)")
    opt = p.add_argument_group("face")
    opt.add_argument(
        "--size", type=int, default=_PIPELINE.extract.size, choices=(256, 512), help="render size"
    )
    opt.add_argument(
        "--preprocess",
        default=_PIPELINE.extract.preprocess,
        choices=PREPROCESS_MODES,
        help="how the face is cropped",
    )
    opt.add_argument(
        "--detector",
        default=_PIPELINE.extract.detector,
        choices=(AUTO, *DETECTORS),
        help="face detector backend",
    )
    opt.add_argument(
        "--face_index", type=int, default=_PIPELINE.extract.face_index, help="0 = the largest face"
    )
    add_motion_arguments(p.add_argument_group("motion"))
    add_render_arguments(p)
    p.add_argument(
        "--devices",
        help="with --batch: render clips in parallel, one worker per device: a comma-separated "
        "list (cuda:0,cuda:1) or 'all' (every visible CUDA device)",
    )
    p.set_defaults(func=run_cli)


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """The render, paste-back, enhance and runtime options shared by ``generate`` and
    ``render`` (read back by :func:`render_config` and :func:`device_arg`)."""
    ren = parser.add_argument_group("render")
    ren.add_argument(
        "--batch_size",
        type=int,
        default=_PIPELINE.render.batch_size,
        help="frames per generator call",
    )
    ren.add_argument(
        "--precision",
        default=_PIPELINE.render.precision,
        choices=PRECISIONS,
        help="auto: tf32 on CUDA, fp32 (Winograd convolutions where faster) on CPU; "
        "fp32: exact; bf16/fp16 faster but approximate",
    )
    ren.add_argument(
        "--compile",
        default=_PIPELINE.render.compile,
        choices=COMPILE_MODES,
        help=FIELD_HELP["compile"],
    )
    ren.add_argument(
        "--blend",
        default=_PIPELINE.blend,
        choices=BLENDS,
        help="paste-back for full modes",
    )
    ren.add_argument(
        "--crf", type=int, default=_PIPELINE.crf, help="H.264 quality (0 lossless .. 51 worst)"
    )
    enh = parser.add_argument_group("enhance")
    enh.add_argument(
        "--enhancer",
        choices=ENHANCER_NAMES,
        help="restore the faces of every frame (GFPGANv1.4.pth / RestoreFormer.pth; needs spandrel)",
    )
    enh.add_argument(
        "--enhance_upscale",
        type=int,
        default=EnhanceConfig().upscale,
        choices=(1, 2, 3, 4),
        help="with --enhancer: output frames this many times larger (official: 2)",
    )
    enh.add_argument(
        "--background_enhancer",
        metavar="realesrgan|FILE",
        help="with --enhancer: upscale the whole frame with Real-ESRGAN (RealESRGAN_x2plus.pth) "
        "or any spandrel upscaler file, tiled (official: realesrgan)",
    )
    run = parser.add_argument_group("runtime")
    run.add_argument("--device", help="cpu | cuda | cuda:N | mps (default: the best available)")
    run.add_argument("--cpu", action="store_true", help="same as --device cpu")
    run.add_argument("--checkpoint_dir", help="folder holding the checkpoints (searched first)")


def device_arg(args: argparse.Namespace) -> str | None:
    """The torch device asked for by ``--device`` / ``--cpu`` (None: the best available)."""
    return "cpu" if args.cpu else args.device


def render_config(
    args: argparse.Namespace, detector: str, base: PipelineConfig | None = None
) -> PipelineConfig:
    """``base`` (default: the defaults) with the options of :func:`add_render_arguments`;
    ``detector`` finds the faces to restore. Raises SadTalkerError for an inconsistent choice,
    ValueError for an option out of range."""
    if args.background_enhancer and not args.enhancer:
        raise SadTalkerError(
            "--background_enhancer works together with --enhancer (as in the official CLI): "
            "add --enhancer gfpgan, or leave out --background_enhancer."
        )
    enhance = (
        EnhanceConfig(
            args.enhancer, args.enhance_upscale, detector, background=args.background_enhancer
        )
        if args.enhancer
        else None
    )
    return replace(
        base or PipelineConfig(),
        render=RenderConfig(
            batch_size=args.batch_size, precision=args.precision, compile=args.compile
        ),
        blend=args.blend,
        enhance=enhance,
        crf=args.crf,
    )


def _jobs(args: argparse.Namespace) -> list[tuple[Path, Path | None, Path]]:
    """(image, audio, output) triples of the run.

    ``--batch FOLDER``: every picture with an audio file of the same stem (``anna.png`` +
    ``anna.wav``) -> ``<result_dir>/anna.mp4``. ``--batch CSV``: one ``image,audio[,output]`` row
    per clip (a header row and ``#`` lines are skipped); relative paths, the output's included,
    are relative to the CSV's folder; without an output ->
    ``<result_dir>/<image stem>__<audio stem>.mp4``.
    """
    if args.batch is not None:
        if args.batch.is_dir():
            files = sorted(p for p in args.batch.iterdir() if p.is_file())
            audio = {p.stem: p for p in files if p.suffix.lower() in AUDIO_SUFFIXES}
            jobs = [
                (img, audio[img.stem], args.result_dir / f"{img.stem}.mp4")
                for img in files
                if img.suffix.lower() in IMAGE_SUFFIXES and img.stem in audio
            ]
        else:
            jobs = []
            if not args.batch.is_file():
                raise SadTalkerError(f"Batch file not found: {args.batch}.")
            here = args.batch.expanduser().absolute().parent
            with open(args.batch, newline="") as f:
                for line, row in enumerate(csv.reader(f), 1):
                    if (
                        not row
                        or row[0].strip().lower() in ("image", "source_image")
                        or row[0].startswith("#")
                    ):
                        continue
                    if len(row) < 2 or not row[0].strip() or not row[1].strip():
                        raise SadTalkerError(
                            f"Line {line} of {args.batch} must be image,audio[,output]; got {row}."
                        )
                    # Every relative path of the CSV is relative to the CSV's folder.
                    img, aud = (here / row[0].strip(), here / row[1].strip())
                    out = here / row[2].strip() if len(row) > 2 and row[2].strip() else None
                    jobs.append((img, aud, out or args.result_dir / f"{img.stem}__{aud.stem}.mp4"))
        if not jobs:
            raise SadTalkerError(f"No (image, audio) pairs found in {args.batch}.")
        if args.idle_seconds is not None:
            raise SadTalkerError(
                "--idle_seconds replaces the audio; it cannot be used with --batch."
            )
        return jobs
    if args.source_image is None or (args.driven_audio is None and args.idle_seconds is None):
        raise SadTalkerError(
            "Give --source_image and --driven_audio (or --idle_seconds), or --batch."
        )
    if args.driven_audio is not None and args.idle_seconds is not None:
        raise SadTalkerError("Give either --driven_audio or --idle_seconds, not both.")
    name = (
        f"{args.source_image.stem}__{args.driven_audio.stem if args.driven_audio else 'idle'}.mp4"
    )
    return [(args.source_image, args.driven_audio, args.out or args.result_dir / name)]


def _reference(path: Path | None, pipe, extract: ExtractConfig):
    if path is None:
        return None
    if path.suffix.lower() in (".npz", ".mat"):
        return load_coeff_rows(path)
    return pipe.reference_rows(path, PipelineConfig(extract=extract))


def _config(args: argparse.Namespace) -> PipelineConfig:
    """The run's PipelineConfig. Raises ValueError for an option out of range."""
    base = PipelineConfig(
        extract=ExtractConfig(
            preprocess=args.preprocess,
            size=args.size,
            detector=args.detector,
            face_index=args.face_index,
        ),
        coeffs=coeff_config(args),
    )
    return render_config(args, args.detector, base)


def worker_devices(spec: str | None, default: str | None) -> list[str | None]:
    """The devices of ``--devices``: a comma-separated list or ``all`` (every CUDA device);
    without it, the one ``default`` device."""
    if not spec:
        return [default]
    if spec.strip() == "all":
        count = torch.cuda.device_count()
        if count == 0:
            raise SadTalkerError("--devices all: no CUDA device is visible; name the devices.")
        return [f"cuda:{i}" for i in range(count)]
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    for d in devices:
        try:
            torch.device(d)
        except RuntimeError as e:
            raise SadTalkerError(f"--devices: '{d}' is not a torch device ({e}).") from e
    return devices or [default]


def run_cli(args: argparse.Namespace) -> int:
    jobs = _jobs(args)
    try:
        cfg = _config(args)
    except ValueError as e:  # an option out of range: the config dataclasses say which
        raise SadTalkerError(str(e)) from e
    devices = worker_devices(getattr(args, "devices", None), device_arg(args))
    jobs, failed = _checked_jobs(args, jobs)
    if not jobs:
        return 1
    if len(devices) > 1 and len(jobs) > 1:
        return max(_run_parallel(args, cfg, jobs, devices), 1 if failed else 0)
    render = _clip_renderer(args, cfg, checkpoint_dirs(args), devices[0])
    bar = TerminalBar()
    try:
        for i, (image, audio, out) in enumerate(jobs, 1):
            bar = TerminalBar(f"[{i}/{len(jobs)}] {image.name}", "frame")

            def progress(stage: str, done: int, total: int, bar: TerminalBar = bar) -> None:
                if stage == "render":
                    bar(done, total)

            try:
                path = render(image, audio, out, progress=progress)
            except SadTalkerError as e:
                if len(jobs) == 1:
                    raise
                failed += 1
                _report_failure(image, audio, e)
                continue
            finally:
                bar.close()
            say(path)
    except KeyboardInterrupt:
        bar.close()
        say("interrupted: no partial video was kept", file=sys.stderr)
        return 130
    return 1 if failed else 0


def _checked_jobs(
    args: argparse.Namespace, jobs: list[tuple[Path, Path | None, Path]]
) -> tuple[list[tuple[Path, Path | None, Path]], int]:
    """The jobs whose input files are readable, checked before any network loads, and how many
    were dropped: a bad clip of a batch is reported and skipped (exit 1 at the end); a bad
    single clip or reference video stops the run (SadTalkerError)."""
    check_inputs(ref_eyeblink=args.ref_eyeblink, ref_pose=args.ref_pose)
    if len(jobs) == 1:
        check_inputs(*jobs[0][:2])
        return jobs, 0
    good = []
    for image, audio, out in jobs:
        try:
            check_inputs(image, audio)
        except SadTalkerError as e:
            _report_failure(image, audio, e)
            continue
        good.append((image, audio, out))
    return good, len(jobs) - len(good)


def _clip_renderer(
    args: argparse.Namespace, cfg: PipelineConfig, dirs: list[Path], device: str | None
) -> Callable[..., Path]:
    """``render(image, audio, out, **callbacks)`` for one device: the networks, the enhancer
    (a missing restorer file stops the run before any work) and the reference rows once."""
    pipe = SadTalkerPipeline(dirs, device)
    if cfg.enhance is not None:
        pipe.enhancer(cfg.enhance)
    refs = {
        "ref_eyeblink": _reference(args.ref_eyeblink, pipe, cfg.extract),
        "ref_pose": _reference(args.ref_pose, pipe, cfg.extract),
    }
    return functools.partial(pipe.run, config=cfg, **refs)


def _report_failure(image: Path, audio: Path | None, e: Exception) -> None:
    say(f"error: {image.name} + {audio.name if audio else 'idle'}: {e}", file=sys.stderr)


def _run_parallel(
    args: argparse.Namespace,
    cfg: PipelineConfig,
    jobs: list[tuple[Path, Path | None, Path]],
    devices: list[str | None],
) -> int:
    """Clips spread over one worker per device (each with its own networks), taken from one
    queue as workers become free; each finished path is printed as it is written."""
    dirs = checkpoint_dirs(args)
    pending: queue.Queue = queue.Queue()
    for job in jobs:
        pending.put(job)
    stop = threading.Event()
    failed: list[Path] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(device: str | None) -> None:
        try:
            render = _clip_renderer(args, cfg, dirs, device)
        except BaseException as e:  # a worker that cannot start stops the run
            errors.append(e)
            stop.set()
            return
        while not stop.is_set():
            try:
                image, audio, out = pending.get_nowait()
            except queue.Empty:
                return
            try:
                path = render(image, audio, out, should_cancel=stop.is_set)
            except CancelledError:
                return
            except SadTalkerError as e:
                with lock:
                    failed.append(image)
                    _report_failure(image, audio, e)
                continue
            except BaseException as e:
                errors.append(e)
                stop.set()
                return
            with lock:
                say(f"{path}  ({device})")

    say(f"{len(jobs)} clips on {len(devices)} workers: {', '.join(map(str, devices))}")
    threads = [threading.Thread(target=work, args=(d,), daemon=True) for d in devices]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
        say("interrupted: no partial video was kept", file=sys.stderr)
        return 130
    if errors:
        raise errors[0]
    return 1 if failed else 0
