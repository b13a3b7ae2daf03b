"""``python -m sadtalker_core coeffs``: speech + source face -> motion coefficients (.npz / .mat)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..config import FIELD_HELP, CoeffConfig
from ..devices import auto_device
from .common import TerminalBar, checkpoint_dirs, say

log = logging.getLogger(__name__)


def add_motion_arguments(parser: argparse.ArgumentParser) -> None:
    """The motion options shared by ``coeffs`` and ``generate`` (one source of help: FIELD_HELP)."""
    d = CoeffConfig()
    parser.add_argument("--seed", type=int, default=d.seed, help=FIELD_HELP["seed"])
    parser.add_argument(
        "--pose_style", type=int, default=d.pose_style, help=FIELD_HELP["pose_style"]
    )
    parser.add_argument("--still", action="store_true", help=FIELD_HELP["still"])
    parser.add_argument("--fps", type=float, default=d.fps, help=FIELD_HELP["fps"])
    parser.add_argument(
        "--expression_scale",
        type=float,
        default=d.expression_scale,
        help=FIELD_HELP["expression_scale"],
    )
    parser.add_argument(
        "--head_motion_scale",
        type=float,
        default=d.head_motion_scale,
        help=FIELD_HELP["head_motion_scale"],
    )
    parser.add_argument(
        "--no_blink", "--no-blink", dest="blink", action="store_false", help="no eye blinks"
    )
    for axis in ("yaw", "pitch", "roll"):
        parser.add_argument(
            f"--input_{axis}",
            nargs="+",
            type=float,
            metavar="DEG",
            help=FIELD_HELP[f"input_{axis}"],
        )
    parser.add_argument("--idle_seconds", type=float, default=None, help=FIELD_HELP["idle_seconds"])


def coeff_config(args: argparse.Namespace) -> CoeffConfig:
    """CoeffConfig from the options of :func:`add_motion_arguments` (ValueError when out of range)."""
    return CoeffConfig(
        seed=args.seed,
        pose_style=args.pose_style,
        expression_scale=args.expression_scale,
        head_motion_scale=args.head_motion_scale,
        still=args.still,
        blink=args.blink,
        fps=args.fps,
        input_yaw=tuple(args.input_yaw) if args.input_yaw else None,
        input_pitch=tuple(args.input_pitch) if args.input_pitch else None,
        input_roll=tuple(args.input_roll) if args.input_roll else None,
        idle_seconds=args.idle_seconds,
    )


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``coeffs`` sub-command to the ``python -m sadtalker_core`` parser."""
    p = subparsers.add_parser(
        "coeffs",
        help="speech + extracted face -> per-frame motion coefficients (.npz, optional .mat)",
        description="Run ExpNet + PoseVAE on speech (or idle time) for a face extracted by the "
        "face stage. Exit status: 0 written, 1 invalid input or missing checkpoint.",
    )
    p.add_argument(
        "--face",
        required=True,
        type=Path,
        help="face .npz of the extract stage (or an official first-frame .mat with coeff_3dmm)",
    )
    p.add_argument(
        "--driven_audio",
        type=Path,
        help="speech: wav, mp3, flac, ogg, m4a, or a video with an audio track",
    )
    p.add_argument("--out", required=True, type=Path, help="output coefficients .npz")
    p.add_argument("--mat", type=Path, help="also write the official .mat layout (coeff_3dmm)")
    add_motion_arguments(p)
    p.add_argument(
        "--ref_eyeblink",
        type=Path,
        help="coefficient file (.npz/.mat) of a reference video whose eye blinks to copy",
    )
    p.add_argument(
        "--ref_pose",
        type=Path,
        help="coefficient file (.npz/.mat) of a reference video whose head motion to add",
    )
    p.add_argument("--checkpoint_dir", help="folder holding the checkpoints (searched first)")
    p.add_argument(
        "--size", type=int, choices=(256, 512), default=256, help="which combined file to use"
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda, mps, else cpu)")
    p.set_defaults(func=_cmd_coeffs)


def _cmd_coeffs(args: argparse.Namespace) -> int:
    from ..coeffs.files import load_coeff_rows, load_source, save_mat
    from ..coeffs.generate import CoeffModels, generate_coeffs
    from ..errors import SadTalkerError
    from ..io.inputs import check_inputs

    if (args.driven_audio is None) == (args.idle_seconds is None):
        say(
            "error: give --driven_audio for lip sync, or --idle_seconds S for idle motion "
            "(exactly one of them).",
            file=sys.stderr,
        )
        return 1
    # generate_coeffs counts network steps (ExpNet over every 25 fps frame, then PoseVAE), not
    # output frames; the bar is closed as it completes, before the stage logs its summary
    # (a log line under an open bar makes tqdm draw the bar a second time).
    bar = TerminalBar("coefficients (ExpNet + PoseVAE)", "step")

    def progress(done: int, total: int) -> None:
        bar(done, total)
        if done >= total:
            bar.close()

    try:
        config = coeff_config(args)
        # the input files first: a wrong path is reported before the networks load
        check_inputs(None, args.driven_audio, args.ref_eyeblink, args.ref_pose)
        result = generate_coeffs(
            load_source(args.face),
            args.driven_audio,
            config,
            models=CoeffModels.load(checkpoint_dirs(args), args.size, auto_device(args.device)),
            ref_eyeblink=None if args.ref_eyeblink is None else load_coeff_rows(args.ref_eyeblink),
            ref_pose=None if args.ref_pose is None else load_coeff_rows(args.ref_pose),
            progress=progress,
        )
        out = result.save(args.out)
        mat = save_mat(result, args.mat) if args.mat is not None else None
    except (SadTalkerError, ValueError) as e:
        bar.close()
        say(f"error: {e}", file=sys.stderr)
        return 1
    bar.close()
    say(
        f"{result.num_frames} frames at {result.fps:g} fps ({result.duration:.2f} s) -> {out}"
        + (f" and {mat}" if mat else "")
    )
    return 0
