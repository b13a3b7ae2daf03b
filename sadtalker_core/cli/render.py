"""``render``: saved stages (face.npz of ``extract`` + coeffs.npz of ``coeffs``) -> MP4, with any
render, paste-back and enhance options, without recomputing the face or the coefficients."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import SadTalkerError
from ..pipeline import SadTalkerPipeline
from ..types import Coeffs, Face
from .common import TerminalBar, checkpoint_dirs, say
from .generate import add_render_arguments, device_arg, render_config


def add_cli(sub: argparse._SubParsersAction) -> None:
    """Add the ``render`` sub-command to the ``python -m sadtalker_core`` parser."""
    p = sub.add_parser(
        "render",
        help="face.npz (extract) + coeffs.npz (coeffs) -> talking-head MP4",
        description="Render saved stages: the face of 'extract' moved by the coefficients of "
        "'coeffs' (whose audio becomes the sound track). Size and preprocess mode come from the "
        "face file. Exit status: 0 written, 1 bad input or missing checkpoint, 130 interrupted.",
    )
    io = p.add_argument_group("inputs and output")
    io.add_argument("--face", required=True, type=Path, help="face .npz written by 'extract'")
    io.add_argument("--coeffs", required=True, type=Path, help="coefficients .npz of 'coeffs'")
    io.add_argument(
        "--out",
        type=Path,
        help="output MP4 (default: <result_dir>/<face stem>__<coeffs stem>.mp4)",
    )
    io.add_argument("--result_dir", type=Path, default=Path("results"), help="folder for the video")
    add_render_arguments(p)
    p.set_defaults(func=run)


def _load(kind: str, loader, path: Path):
    if not path.is_file():
        raise SadTalkerError(f"The {kind} file {path} does not exist.")
    try:
        return loader(path)
    except (OSError, ValueError, KeyError) as e:
        raise SadTalkerError(
            f"{path} is not a {kind} file of this tool ({e}); write it with "
            f"'sadtalker {'extract' if kind == 'face' else 'coeffs'} ... --out {path.name}'."
        ) from e


def run(args: argparse.Namespace) -> int:
    face = _load("face", Face.load, args.face)
    coeffs = _load("coefficients", Coeffs.load, args.coeffs)
    cfg = render_config(args, face.detector or "auto")
    out = args.out or args.result_dir / f"{args.face.stem}__{args.coeffs.stem}.mp4"
    pipe = SadTalkerPipeline(checkpoint_dirs(args), device_arg(args))
    bar = TerminalBar(f"render {out.name}", "frame")

    def progress(stage: str, done: int, total: int) -> None:
        bar(done, total)
        if done >= total:
            bar.close()  # before the encoder logs its summary line under the bar

    try:
        path = pipe.render_to_file(face, coeffs, out, cfg, progress)
    except KeyboardInterrupt:
        say("interrupted: no partial video was kept", file=sys.stderr)
        return 130
    finally:
        bar.close()
    say(path)
    return 0
