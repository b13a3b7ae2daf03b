"""Command line: ``python -m sadtalker_core <command>``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import models as registry
from ..devices import auto_device
from ..errors import SadTalkerError
from ..face.detect import AUTO, DETECTORS
from .common import TerminalBar, checkpoint_dirs, say


def _cmd_check_weights(args: argparse.Namespace) -> int:
    dirs = checkpoint_dirs(args)
    say("Searching for SadTalker checkpoints in:")
    for d in dirs:
        say(f"  {d}{'' if d.is_dir() else '  (does not exist)'}")
    reports = registry.check_weights(dirs)
    width = max(len(r.spec.name) for r in reports)
    say()
    for r in reports:
        line = f"{r.spec.name:<{width}}  {r.status:<8}"
        if r.status == "found":
            line += f"  {r.path}"
        elif r.status == "invalid":
            line += f"  {r.path}\n{'':<{width}}  -> {r.reason}\n{'':<{width}}  -> {r.spec.download_hint}"
        else:
            line += f"  ({r.spec.needed_for}: {r.spec.role}; ~{r.spec.size_mb} MB)"
        say(line)
    from ..face.detect import available_detectors

    detectors = available_detectors(dirs)
    hint = (
        ""
        if "official" in detectors
        else " (official: needs detection_Resnet50_Final.pth + alignment_WFLW_4HG.pth)"
    )
    say(f"\nFace detectors available: {', '.join(detectors) or 'none'}{hint}")
    invalid = [r for r in reports if r.status == "invalid"]
    sizes = registry.runnable_sizes(reports)
    say()
    if sizes:
        say(f"Ready to render at: {', '.join(f'{s} px' for s in sizes)}.")
    else:
        say(
            "Not ready: SadTalker needs SadTalker_V0.0.2_256.safetensors (or _512) and "
            "mapping_00229-model.pth.tar (mapping_00109-model.pth.tar for full/extfull).\n"
            f"Download them from {registry.RELEASE_URL}/ into {dirs[0]}"
        )
    if invalid:
        say(f"{len(invalid)} file(s) are invalid: re-download them.")
        return 1
    return 0 if sizes else 2


def _cmd_download_weights(args: argparse.Namespace) -> int:
    from ..models.download import DownloadError, download_weights, files_for

    dest = args.checkpoint_dir or checkpoint_dirs(args)[0]
    sizes = (256, 512) if args.size == "all" else (int(args.size),)
    names = files_for(sizes, enhancer=args.enhancer)
    bars: dict[str, TerminalBar] = {}

    def progress(name: str, done: int, total: int) -> None:
        if name not in bars:
            for bar in bars.values():
                bar.close()
            bars[name] = TerminalBar(name, "B", unit_scale=True)
        bars[name](done, total)

    try:
        paths = download_weights(dest, names, progress=progress)
    except DownloadError as e:
        say(f"error: {e}", file=sys.stderr)
        return 3
    finally:
        for bar in bars.values():
            bar.close()
    say(f"{len(paths)} file(s) downloaded; all of {', '.join(names)} are in {dest}.")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from ..face.extract import ExtractConfig, FaceExtractor

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sadtalker_core", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "check-weights",
        help="report which official checkpoint files are found, missing or invalid",
        description="Exit status: 0 ready, 1 a file is invalid, 2 a required file is missing.",
    )
    p.add_argument(
        "checkpoint_dir", nargs="?", help="folder holding the checkpoints (searched first)"
    )
    p.set_defaults(func=_cmd_check_weights)
    p = sub.add_parser(
        "download-weights",
        help="download the official checkpoints (SadTalker safetensors + MappingNets)",
        description="Exit status: 0 all present, 3 a download failed (offline: lists the files "
        "to fetch by hand and the folder to put them in).",
    )
    p.add_argument(
        "checkpoint_dir", nargs="?", help="target folder (default: the first searched folder)"
    )
    p.add_argument("--size", choices=("256", "512", "all"), default="256", help="render model size")
    p.add_argument("--enhancer", action="store_true", help="also fetch GFPGANv1.4.pth")
    p.set_defaults(func=_cmd_download_weights)
    p = sub.add_parser(
        "extract",
        help="detect and crop the face of a picture and compute its 3DMM coefficients (face.npz)",
    )
    p.add_argument("--source_image", required=True, help="portrait picture (any common format)")
    p.add_argument(
        "--preprocess", default="crop", choices=("crop", "extcrop", "resize", "full", "extfull")
    )
    p.add_argument("--size", type=int, default=256, choices=(256, 512), help="render resolution")
    p.add_argument(
        "--detector", default="auto", choices=(AUTO, *DETECTORS), help="face detector backend"
    )
    p.add_argument("--face_index", type=int, default=0, help="which face, 0 = the largest")
    p.add_argument("--checkpoint_dir", help="folder holding the checkpoints (searched first)")
    p.add_argument("--device", help="cpu | cuda | mps (default: the best available)")
    p.add_argument("--out", required=True, help="output .npz")
    p.set_defaults(func=_cmd_extract)
    from .coeffs import add_cli as add_coeffs_cli

    add_coeffs_cli(sub)
    from .generate import add_cli as add_generate_cli

    add_generate_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if a not in ("-v", "--verbose")), None)
    if first is not None and first.startswith("--") and first != "--help":
        argv.insert(argv.index(first), "generate")  # the official CLI has no sub-command
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s"
    )
    try:
        return args.func(args)
    except SadTalkerError as e:
        say(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
