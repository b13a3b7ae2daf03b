"""CI: fill this checkout's ``checkpoints/`` as a user's quickstart leaves it, before README's test
command runs, so that the whole suite runs where a user's weights are present.

The official file names are linked to the tests' stand-in files (the SadTalker files and the two
restorers, generated once in the tests' cache). No test may find them: ``tests/conftest.py``
hides the checkout's ``checkpoints/``, ``SADTALKER_CHECKPOINTS`` and the hosts' model folders
from every test that does not put weights there itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _support import (  # noqa: E402
    OFFICIAL_FILES,
    generate_official_weights,
    generate_restorer_weights,
)


def main() -> int:
    cache = Path.home() / ".cache" / "sadtalker_core"
    weights = Path(os.environ.get("SADTALKER_TEST_WEIGHTS", cache / "test-weights"))
    enhancer = Path(os.environ.get("SADTALKER_TEST_ENHANCER", cache / "test-enhancer"))
    sources = {name: generate_official_weights(weights) / name for name in OFFICIAL_FILES}
    for name in ("GFPGANv1.4.pth", "RestoreFormer.pth"):
        sources[name] = generate_restorer_weights(enhancer) / name
    dest = REPO / "checkpoints"
    dest.mkdir(exist_ok=True)
    for name, src in sources.items():
        target = dest / name
        if not target.exists():
            target.symlink_to(src)
    sys.stdout.write(f"checkpoints/: {len(sources)} files, as a quickstart leaves them\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
