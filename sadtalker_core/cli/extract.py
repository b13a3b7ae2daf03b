"""``extract``: detect and crop the face of a picture, compute its 3DMM coefficients (face.npz)."""

from __future__ import annotations

import argparse

from ..config import AUTO, DETECTORS, PREPROCESS_MODES, ExtractConfig
from ..devices import auto_device
from ..errors import SadTalkerError
from ..face.extract import FaceExtractor
from .common import checkpoint_dirs, say

_DEFAULTS = ExtractConfig()


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="detect and crop the face of a picture and compute its 3DMM coefficients (face.npz)",
    )
    p.add_argument("--source_image", required=True, help="portrait picture (any common format)")
    p.add_argument("--preprocess", default=_DEFAULTS.preprocess, choices=PREPROCESS_MODES)
    p.add_argument(
        "--size", type=int, default=_DEFAULTS.size, choices=(256, 512), help="render resolution"
    )
    p.add_argument(
        "--detector",
        default=_DEFAULTS.detector,
        choices=(AUTO, *DETECTORS),
        help="face detector backend",
    )
    p.add_argument(
        "--face_index", type=int, default=_DEFAULTS.face_index, help="which face, 0 = the largest"
    )
    p.add_argument("--checkpoint_dir", help="folder holding the checkpoints (searched first)")
    p.add_argument("--device", help="cpu | cuda | mps (default: the best available)")
    p.add_argument("--out", required=True, help="output .npz")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = ExtractConfig(
            preprocess=args.preprocess,
            size=args.size,
            detector=args.detector,
            face_index=args.face_index,
        )
    except ValueError as e:  # an option out of range: the config says which
        raise SadTalkerError(str(e)) from e
    face = FaceExtractor(checkpoint_dirs(args), auto_device(args.device)).extract(
        args.source_image, cfg
    )
    out = face.save(args.out)
    say(
        f"{out}: face {face.face_index} ({face.detector}), {face.preprocess} crop at {face.size} px"
    )
    return 0
