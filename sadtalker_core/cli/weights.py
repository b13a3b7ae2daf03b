"""``check-weights`` and ``download-weights``: which official files are here, and fetching them."""

from __future__ import annotations

import argparse
import sys

from .. import models
from ..face.detect import available_detectors
from ..models.download import DownloadError, download_weights, files_for
from .common import TerminalBar, checkpoint_dirs, say


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-weights",
        help="report which official checkpoint files are found, missing or invalid",
        description="Exit status: 0 ready, 1 a file is invalid, 2 a required file is missing.",
    )
    p.add_argument(
        "checkpoint_dir", nargs="?", help="folder holding the checkpoints (searched first)"
    )
    p.set_defaults(func=check_weights)
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
    p.add_argument(
        "--enhancer",
        action="store_true",
        help="also fetch GFPGANv1.4.pth and parsing_parsenet.pth (face enhancer + paste mask)",
    )
    p.add_argument(
        "--background_enhancer",
        action="store_true",
        help="also fetch RealESRGAN_x2plus.pth (background upscaler)",
    )
    p.set_defaults(func=download)


def check_weights(args: argparse.Namespace) -> int:
    dirs = checkpoint_dirs(args)
    say("Searching for SadTalker checkpoints in:")
    for d in dirs:
        say(f"  {d}{'' if d.is_dir() else '  (does not exist)'}")
    reports = models.check_weights(dirs)
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
    detectors = available_detectors(dirs)
    hint = (
        ""
        if "official" in detectors
        else " (official: needs detection_Resnet50_Final.pth + alignment_WFLW_4HG.pth)"
    )
    say(f"\nFace detectors available: {', '.join(detectors) or 'none'}{hint}")
    invalid = [r for r in reports if r.status == "invalid"]
    sizes = models.runnable_sizes(reports)
    say()
    if sizes:
        say(f"Ready to render at: {', '.join(f'{s} px' for s in sizes)}.")
    else:
        say(
            "Not ready: SadTalker needs SadTalker_V0.0.2_256.safetensors (or _512) and "
            "mapping_00229-model.pth.tar (mapping_00109-model.pth.tar for full/extfull).\n"
            f"Download them from {models.RELEASE_URL}/ into {dirs[0]}"
        )
    if invalid:
        say(f"{len(invalid)} file(s) are invalid: re-download them.")
        return 1
    return 0 if sizes else 2


def download(args: argparse.Namespace) -> int:
    dest = args.checkpoint_dir or checkpoint_dirs(args)[0]
    sizes = (256, 512) if args.size == "all" else (int(args.size),)
    names = files_for(sizes, enhancer=args.enhancer, background=args.background_enhancer)
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
