"""``extract``: detect and crop the face of a picture, compute its 3DMM coefficients (face.npz)."""

from __future__ import annotations

import argparse

from ..devices import auto_device
from ..face import FaceExtractor
from .common import add_options, checkpoint_dirs, run_config, say


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="detect and crop the face of a picture and compute its 3DMM coefficients (face.npz)",
    )
    p.add_argument("--source_image", required=True, help="portrait picture (any common format)")
    add_options(p, ("extract",))
    p.add_argument("--checkpoint_dir", help="folder holding the checkpoints (searched first)")
    p.add_argument("--device", help="cpu | cuda | mps (default: the best available)")
    p.add_argument("--out", required=True, help="output .npz")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = run_config(args, ("extract",)).extract
    face = FaceExtractor(checkpoint_dirs(args), auto_device(args.device)).extract(
        args.source_image, cfg
    )
    out = face.save(args.out)
    say(
        f"{out}: face {face.face_index} ({face.detector}), {face.preprocess} crop at {face.size} px"
    )
    return 0
