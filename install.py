"""Dependency installer run by the hosts: A1111/Forge on every launch, ComfyUI-Manager once.

Installs only what requirements.txt lists and is missing, always constrained to the torch,
torchvision and numpy the host already has, so it can never swap the host's torch. It never
downloads model weights (``python -m sadtalker_core download-weights`` does that on request).
Running it again is a no-op.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
HOST_OWNED = ("torch", "torchvision", "torchaudio", "numpy")
# pip name -> import-independent distribution names that satisfy it
ALTERNATIVES = {
    "opencv-python-headless": (
        "opencv-python",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
    )
}


# Needed but not in requirements.txt, so that ComfyUI-Manager never forces a second cv2 next to
# the host's: installed only when no OpenCV distribution (ALTERNATIVES) is present.
OPENCV = "opencv-python-headless>=4.9"


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()] + [OPENCV]


def _dist_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]


def _installed(name: str) -> bool:
    for candidate in (name, *ALTERNATIVES.get(name, ())):
        try:
            importlib.metadata.version(candidate)
            return True
        except importlib.metadata.PackageNotFoundError:
            continue
    return False


def _pins() -> list[str]:
    pins = []
    for name in HOST_OWNED:
        if _installed(name):
            pins.append(f"{name}=={importlib.metadata.version(name)}")
    return pins


def missing_requirements() -> list[str]:
    return [
        r
        for r in _requirements()
        if _dist_name(r) not in HOST_OWNED and not _installed(_dist_name(r))
    ]


def main() -> int:
    todo = missing_requirements()
    if not todo:
        return 0
    try:
        import launch  # A1111 / Forge: use their pip wrapper (respects --skip-install, index url)
    except ImportError:
        launch = None
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(_pins()) + "\n")
        constraint = f.name
    try:
        if launch is not None:
            for req in todo:
                launch.run_pip(
                    f'install "{req}" -c "{constraint}"', f"SadTalker requirement: {req}"
                )
        else:
            cmd = [sys.executable, "-m", "pip", "install", "-c", constraint, *todo]
            print("SadTalker: installing", " ".join(todo))  # noqa: T201
            subprocess.check_call(cmd)
    finally:
        os.unlink(constraint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
