"""Where the benchmarks find checkpoints: the searched folders, else generated stand-ins."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sadtalker_core import models as registry  # noqa: E402
from sadtalker_core.errors import ModelNotFoundError  # noqa: E402


def find_weights(explicit: str | None, needed: tuple[str, ...] = ("generator", "mapping")) -> Path:
    """A folder holding the networks ``needed``, else the official-format stand-ins that
    ../shared/reference/make_weights.py generates (same shapes, so the same speed)."""
    dirs = registry.default_checkpoint_dirs(explicit)
    try:
        folders = {registry.network_file(n, dirs).parent for n in needed}
    except ModelNotFoundError:
        folders = set()
    if len(folders) == 1:
        return folders.pop()
    sys.path.insert(0, str(REPO / "tests"))
    from _support import generate_official_weights

    default = Path.home() / ".cache" / "sadtalker_core" / "test-weights"
    dest = Path(os.environ.get("SADTALKER_TEST_WEIGHTS", default))  # where the tests keep them
    print(f"official weights not found; using generated stand-ins in {dest}")  # noqa: T201
    return generate_official_weights(dest)
