"""``python -m sadtalker_core coeffs``: speech + source face -> motion coefficients (.npz / .mat)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..devices import auto_device
from ..errors import OptionError
from ..options import check_speech
from .common import TerminalBar, add_options, checkpoint_dirs, flag, run_config, say

log = logging.getLogger(__name__)


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
    add_options(p.add_argument_group("motion"), ("coeffs",))
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
    add_options(p, ("extract",), only=("size",))
    p.add_argument("--device", default=None, help="torch device (default: cuda, mps, else cpu)")
    p.set_defaults(func=_cmd_coeffs)


def _cmd_coeffs(args: argparse.Namespace) -> int:
    from ..coeffs.files import load_coeff_rows, load_source, save_mat
    from ..coeffs.generate import CoeffModels, generate_coeffs
    from ..errors import SadTalkerError
    from ..io.inputs import check_inputs

    try:
        check_speech(args.driven_audio is not None, args.idle_seconds)
    except OptionError as e:
        say(f"error: {e.named(flag)}", file=sys.stderr)
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
        config = run_config(args, ("coeffs",)).coeffs
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
