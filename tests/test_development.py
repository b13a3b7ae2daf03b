"""README's Development section, followed in a fresh clone where a user already ran the
quickstart: the weights sit in the clone's ``checkpoints/`` (the SadTalker files, GFPGAN and
RestoreFormer) and ``.venv`` is the quickstart's environment (here: this test venv, linked).

Every line of the section's ``bash`` block runs as written, offline (the network is refused),
except that the test command runs a representative subset, not the whole suite (it takes about
20 minutes): the tests that used to find the user's weights (``check-weights`` on an empty folder,
the "missing file" errors of the restorers, the background upscaler and the face detectors),
the folder search, the input checks and the A1111 options (the package ``.ci/test_env.sh``
prepares). The A1111 test hosts (``.ci/gradio3`` / ``.ci/gradio4``) are linked from this checkout,
as a user would have them after a first ``bash .ci/test_env.sh`` online.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from _support import SHARED, clone_with_weights, offline_env, readme_blocks

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parents[1]
SUBSET = [
    "tests/test_checkpoints.py",
    "tests/test_cli_render.py::test_check_weights_says_where_each_file_comes_from",
    "tests/test_cli_render.py::test_each_searched_folder_is_listed_once",
    "tests/test_enhance.py::test_missing_restorer_names_the_file_and_where_to_get_it",
    "tests/test_upscale.py::test_unknown_background_names_the_file_and_the_fix",
    "tests/test_detect.py::test_auto_error_names_all_options",
    "tests/test_pipeline.py::test_cli_enhancer_without_its_weights_stops_before_any_work",
    "tests/test_stop_inputs_progress.py::test_library_reports_bad_inputs_before_loading_anything",
    "tests/test_stop_inputs_progress.py::test_cli_reports_a_bad_audio_before_the_models_and_the_enhancer",
    "tests/test_a1111.py::test_options_use_the_cli_names_and_refuse_unknown_ones",
]


def development_commands(readme: str) -> list[str]:
    """The command lines of the first ``bash`` block of README's Development section (the
    test environment and the test command; the benchmarks come after)."""
    section = readme.split("\n## Development\n", 1)[1].split("\n## ", 1)[0]
    block = readme_blocks(section, "bash")[0]
    return [c for c in (line.split("#", 1)[0].strip() for line in block.splitlines()) if c]


def test_development_section_in_a_clone_with_the_users_weights(weights_dir, restorer_dir, tmp_path):
    clone = clone_with_weights(tmp_path / "ComfyUI-SadTalker", weights_dir)
    for name in ("SadTalker_V0.0.2_512.safetensors",):
        os.link(weights_dir / name, clone / "checkpoints" / name)
    for name in ("GFPGANv1.4.pth", "RestoreFormer.pth"):
        os.link(restorer_dir / name, clone / "checkpoints" / name)
    (clone / ".venv").symlink_to(VENV, target_is_directory=True)
    for host in ("gradio3", "gradio4"):
        (clone / ".ci" / host).symlink_to(REPO / ".ci" / host, target_is_directory=True)
    bin_dir = clone / ".venv" / "bin"
    env = offline_env(  # `source .venv/bin/activate`; the quickstart's `pip install -e .` = PYTHONPATH
        PATH=os.pathsep.join([str(bin_dir), os.environ["PATH"]]),
        VIRTUAL_ENV=str(clone / ".venv"),
        PYTHONPATH=str(clone),
        SADTALKER_SHARED=str(SHARED),  # README: the reference data folder, when not ../shared
    )
    which = subprocess.run(
        ["python", "-c", "import sadtalker_core; print(sadtalker_core.__file__)"],
        cwd=clone, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(which.stdout.strip()).is_relative_to(clone), which.stdout

    commands = development_commands((clone / "README.md").read_text())
    assert commands[-1] == "python -m pytest tests", commands  # README's test command
    assert any("requirements-test" in c or "test_env.sh" in c for c in commands), commands
    for command in commands:
        argv = shlex.split(command)
        if argv[-1] == "tests" and argv[:3] == ["python", "-m", "pytest"]:
            argv = [*argv[:-1], "-q", "-p", "no:cacheprovider", *SUBSET]
        proc = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        shown = f"$ {shlex.join(argv)}\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
        assert proc.returncode == 0, shown
        if argv[0] == "python":
            summary = proc.stdout.strip().splitlines()[-1]
            assert re.fullmatch(r"\d+ passed(, \d+ warnings?)? in .*", summary), (
                shown
            )  # no skip, no fail
        else:
            assert "several cv2 distributions" not in proc.stderr, shown
    assert not (clone / "results").exists()
