"""The benchmark scripts still run against the library (they print figures and are not run by
CI otherwise): every script parses its options, and the render benchmark finds its weights and
goes through its setup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=BENCHMARKS.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_starts(script):
    run = _run(str(BENCHMARKS / script), "--help")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout


@pytest.mark.parametrize("where", ["given folder", "no weights: generated stand-ins"])
def test_render_benchmark_finds_weights_and_sets_up(weights_dir, tmp_path, where):
    """With a folder of weights, and without any (it falls back to the tests' stand-ins)."""
    args = [str(BENCHMARKS / "render.py"), "--device", "cpu", "--sizes"]
    env = {"SADTALKER_TEST_WEIGHTS": str(weights_dir)}
    if where == "given folder":
        args += ["--checkpoint-dir", str(weights_dir)]
    else:
        env |= {"HOME": str(tmp_path), "SADTALKER_CHECKPOINTS": str(tmp_path)}
    run = _run(*args, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "threads" in run.stdout and "weights" in run.stdout
