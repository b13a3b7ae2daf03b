"""``python -m sadtalker_core [generate] --source_image IMG --driven_audio AUDIO``: the official CLI's flags."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ..batch.jobs import read_jobs
from ..coeffs.files import load_coeff_rows
from ..config import ExtractConfig, PipelineConfig
from ..errors import OptionError, SadTalkerError
from ..io.inputs import check_inputs
from ..options import check_speech
from ..pipeline import SadTalkerPipeline
from .batch import add_batch_arguments, run_batch
from .common import TerminalBar, add_options, checkpoint_dirs, flag, run_config, say

RENDER_STAGES = ("render", "run", "enhance")  # the options of add_render_arguments


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
    add_options(p.add_argument_group("face"), ("extract",))
    add_options(p.add_argument_group("motion"), ("coeffs",))
    add_render_arguments(p)
    p.add_argument(
        "--devices",
        help="with --batch: render clips in parallel, one worker per device: a comma-separated "
        "list (cuda:0,cuda:1) or 'all' (every visible CUDA device)",
    )
    add_batch_arguments(p)
    p.set_defaults(func=run_cli)


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """The render, paste-back, enhance and runtime options shared by ``generate`` and
    ``render`` (read back by :func:`render_config` and :func:`device_arg`)."""
    add_options(parser.add_argument_group("render"), ("render", "run"))
    add_options(parser.add_argument_group("enhance"), ("enhance",))
    run = parser.add_argument_group("runtime")
    run.add_argument("--device", help="cpu | cuda | cuda:N | mps (default: the best available)")
    run.add_argument("--cpu", action="store_true", help="same as --device cpu")
    run.add_argument("--checkpoint_dir", help="folder holding the checkpoints (searched first)")


def device_arg(args: argparse.Namespace) -> str | None:
    """The torch device asked for by ``--device`` / ``--cpu`` (None: the best available)."""
    return "cpu" if args.cpu else args.device


def render_config(args: argparse.Namespace, detector: str) -> PipelineConfig:
    """The defaults with the options of :func:`add_render_arguments`; ``detector`` finds the
    faces to restore.

    Raises:
        OptionError: naming the flag to change.
    """
    base = PipelineConfig(extract=ExtractConfig(detector=detector))
    return run_config(args, RENDER_STAGES, base=base)


def _jobs(args: argparse.Namespace) -> list[tuple[Path, Path | None, Path]]:
    """(image, audio, output) triples of the run.

    ``--batch FOLDER``: every picture with an audio file of the same stem (``anna.png`` +
    ``anna.wav``) -> ``<result_dir>/anna.mp4``. ``--batch CSV``: one ``image,audio[,output]`` row
    per clip (a header row and ``#`` lines are skipped); relative paths, the output's included,
    are relative to the CSV's folder; without an output ->
    ``<result_dir>/<image stem>__<audio stem>.mp4``.
    """
    if args.batch is not None:
        jobs = read_jobs(args.batch, args.result_dir)
        if args.idle_seconds is not None:
            raise SadTalkerError(
                "--idle_seconds replaces the audio; it cannot be used with --batch."
            )
        return jobs
    if args.source_image is None:
        raise SadTalkerError(
            "Give --source_image and --driven_audio (or --idle_seconds), or --batch."
        )
    try:
        check_speech(args.driven_audio is not None, args.idle_seconds)
    except OptionError as e:
        raise e.named(flag) from None
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
    """The run's PipelineConfig.

    Raises:
        OptionError: naming the flag to change.
    """
    return run_config(args, ("extract", "coeffs", *RENDER_STAGES))


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
    cfg = _config(args)
    devices = worker_devices(getattr(args, "devices", None), device_arg(args))
    jobs, failed = _checked_jobs(args, jobs)
    if not jobs:
        return 1
    if args.batch is not None:
        return run_batch(args, cfg, jobs, devices, failed)
    if getattr(args, "ray", None):
        raise SadTalkerError("--ray renders the clips of a --batch; add --batch jobs.csv.")
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
