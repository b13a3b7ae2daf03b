"""CPU memory reuse while rendering (``devices.reused_cpu_memory``): large tensors come from
freed heap memory instead of fresh pages inside the block, and glibc's behaviour is back after
it."""

from __future__ import annotations

import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from sadtalker_core import devices

pytestmark = pytest.mark.skipif(devices._glibc() is None, reason="needs Linux with glibc")

MIB = 1 << 20
PAGE = resource.getpagesize()
REUSED, FRESH = 64 * MIB, 384 * MIB  # both above glibc's largest mmap threshold (32 MB)


def _faults_per_round(nbytes: int, rounds: int) -> list[int]:
    """Minor page faults of each round of allocating, touching and freeing ``nbytes``."""
    faults = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = torch.empty(nbytes // 4)
        t.fill_(1.0)
        del t
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return faults


def _reused(nbytes: int, rounds: int = 8) -> bool:
    """Most rounds reuse freed memory: fewer than half of them fault their pages in (glibc may
    alternate between free blocks and occasionally take a new one)."""
    return sum(_faults_per_round(nbytes, rounds)) < rounds / 2 * nbytes // PAGE


def _fresh_every_time(nbytes: int) -> bool:
    """Each round maps and faults in new pages (glibc's default for big blocks)."""
    return min(_faults_per_round(nbytes, 4)[1:]) > 0.9 * nbytes // PAGE


def _in_fresh_process(check: str) -> None:
    """Run ``check`` of this module in a new interpreter: the heap must not hold free blocks
    left by other tests (they would serve the 'fresh' allocations)."""
    here = Path(__file__)
    code = (
        f"import sys; sys.path[:0] = [{str(here.parent)!r}, {str(here.parents[1])!r}]; "
        f"import {here.stem} as t; t.{check}()"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]


def test_big_cpu_tensors_reuse_memory_inside_the_block_only():
    _in_fresh_process("check_reuse_inside_the_block_only")


def test_nested_and_concurrent_users_keep_reuse_until_the_last_leaves():
    _in_fresh_process("check_nested_and_concurrent_users")


def check_reuse_inside_the_block_only():
    assert _fresh_every_time(REUSED)
    with devices.reused_cpu_memory(torch.device("cpu")):
        assert _reused(REUSED)
    assert devices._HeapState.users == 0
    # glibc's defaults are back: a block larger than anything freed inside is mapped afresh
    assert _fresh_every_time(FRESH)


def check_nested_and_concurrent_users():
    cpu = torch.device("cpu")
    entered, release = threading.Event(), threading.Event()

    def other_render():
        with devices.reused_cpu_memory(cpu):
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=other_render)
    worker.start()
    entered.wait(10)
    with devices.reused_cpu_memory(cpu):
        with devices.reused_cpu_memory(cpu):
            pass
        assert devices._HeapState.users == 2
    # this render ended first; the other one still reuses memory
    assert devices._HeapState.users == 1 and _reused(REUSED)
    release.set()
    worker.join(10)
    assert devices._HeapState.users == 0
    assert _fresh_every_time(FRESH + 64 * MIB)


def test_other_devices_are_left_alone():
    with devices.reused_cpu_memory(torch.device("meta")):
        assert devices._HeapState.users == 0
