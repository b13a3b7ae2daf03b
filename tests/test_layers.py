"""The import-direction check CI runs (.ci/check_layers.py): the tree passes, violations fail."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("check_layers", REPO / ".ci" / "check_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_library_follows_the_import_directions():
    assert _checker().violations() == []


@pytest.mark.parametrize(
    ("file", "line", "rule"),
    [
        ("render/infer.py", "import folder_paths", "no host"),
        ("io/audio.py", "from ..models import MODELS", "base modules"),
        ("models/cache.py", "from ..face import detect", "models/ imports no stage"),
        ("face/extract.py", "    from ..pipeline import SadTalkerPipeline", "neither the pipeline"),
        ("pipeline.py", "from .cli.common import say", "only the CLI"),
        ("enhance/restore.py", "from ...nodes import _host", "no host"),
    ],
)
def test_violations_are_reported(tmp_path, file, line, rule):
    shutil.copytree(REPO / "sadtalker_core", tmp_path / "sadtalker_core")
    target = tmp_path / "sadtalker_core" / file
    if line.startswith("    "):
        line = "def _f():\n" + line
    target.write_text(target.read_text() + "\n" + line + "\n")
    problems = _checker().violations(tmp_path)
    assert len(problems) == 1 and rule in problems[0] and file in problems[0]
