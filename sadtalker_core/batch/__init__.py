"""Batches of clips: the job list, one clip runner shared by every engine, the manifest
(resumable runs), the avatar cache and the batch progress; engines: :func:`run_local` (this
machine's devices, worker threads) and ``ray_batch.RayBatch`` (a Ray cluster; the ``ray_*``
modules, not imported here: only ``ray_cluster`` imports ``ray``, when a Ray batch runs)."""

from __future__ import annotations

from .cache import FaceCache, face_key
from .driver import BatchState
from .jobs import ClipResult, Job, read_jobs
from .local import run_local
from .manifest import Manifest
from .runner import ClipRunner, RunnerSpec

__all__ = [
    "BatchState",
    "ClipResult",
    "ClipRunner",
    "FaceCache",
    "Job",
    "Manifest",
    "RunnerSpec",
    "face_key",
    "read_jobs",
    "run_local",
]
