"""The Ray actors of a batch: :class:`ClipWorker` (one per GPU or per CPU worker: loads the
networks once, renders many clips) and :class:`FaceDirectory`, through which the workers share
faces in the object store (:class:`RayFaces`: one extraction per photo)."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ..errors import CancelledError
from .cache import SharedFaces
from .jobs import ClipResult, Job
from .ray_cluster import import_ray
from .ray_results import writable_folders
from .runner import ClipRunner, RunnerSpec

log = logging.getLogger(__name__)

CANCELLED = "cancelled"


class FaceDirectory:
    """Ray actor: which Face is in the object store under which key, and who is extracting one
    now (the others wait for it rather than extracting the same photo)."""

    def __init__(self):
        self.refs: dict[str, Any] = {}
        self.pending: dict[str, float] = {}

    def claim(self, key: str, patience: float) -> tuple[str, list | None]:
        if key in self.refs:
            return "hit", [self.refs[key]]  # in a list: the caller gets the reference itself
        started = self.pending.get(key)
        if started is not None and time.monotonic() - started < patience:
            return "wait", None
        self.pending[key] = time.monotonic()
        return "extract", None

    def publish(self, key: str, face: Any) -> None:
        # owned by this actor: outlives the worker that made it
        self.refs[key] = import_ray().put(face)
        self.pending.pop(key, None)

    def abandon(self, key: str) -> None:
        self.pending.pop(key, None)


class RayFaces(SharedFaces):
    """The avatar cache's tier in Ray's object store (objects owned by the directory actor, so
    they outlive the worker that extracted them). A worker waits at most ``patience`` seconds
    for another one's extraction (longer: it extracts the photo itself)."""

    def __init__(self, directory: Any, patience: float = 120.0):
        self.directory, self.patience = directory, patience

    def fetch(self, key: str):
        ray = import_ray()
        deadline = time.monotonic() + self.patience
        while True:
            state, boxed = ray.get(self.directory.claim.remote(key, self.patience))
            if state == "hit":
                return ray.get(boxed[0])
            if state == "extract" or time.monotonic() > deadline:
                return None
            time.sleep(0.2)  # another worker is extracting this photo

    def publish(self, key: str, face) -> None:
        import_ray().get(self.directory.publish.remote(key, face))

    def abandon(self, key: str) -> None:
        self.directory.abandon.remote(key)


class ClipWorker:
    """Ray actor (two threads: one renders, one answers ``progress`` / ``cancel``)."""

    def __init__(self, spec: RunnerSpec, device: str | None, directory: Any, threads: int):
        self.spec, self.device, self.directory, self.threads = spec, device, directory, threads
        self.runner: ClipRunner | None = None
        self._stop = threading.Event()
        self._progress: tuple[str, int, int] = ("", 0, 0)

    def ready(self, folders: list[tuple[str, str]]) -> dict:
        """Load the networks; say who this worker is and which output folders it can write."""
        import socket

        import torch

        ray = import_ray()
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        name = f"{socket.gethostname()}:{os.getpid()}"
        self.runner = ClipRunner(
            self.spec, self.device, shared=RayFaces(self.directory), worker=name
        )
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        return {
            "pid": os.getpid(),
            "node": ray.util.get_node_ip_address(),
            "worker": name,
            "device": str(self.runner.pipe.device),
            "cores": cores,
            "torch_threads": torch.get_num_threads(),
            "writable": writable_folders(folders),
        }

    def run(self, job: tuple, return_bytes: bool, attempts: int) -> ClipResult:
        job = Job(*job)
        self._stop.clear()
        self._progress = (job.clip, 0, 0)

        def progress(done: int, total: int) -> None:
            self._progress = (job.clip, done, total)

        assert self.runner is not None, "ready() first"
        try:
            return self.runner.run(job, progress, self._stop.is_set, return_bytes, attempts)
        except CancelledError:
            return ClipResult(job.clip, CANCELLED, str(job.output), attempts=attempts)
        except Exception as e:  # reported to the driver, which tries the clip elsewhere
            log.exception("clip %s failed", job.clip)
            return ClipResult.failure(
                job, f"{type(e).__name__}: {e}", attempts=attempts, worker=self.runner.worker
            )
        finally:
            self._progress = ("", 0, 0)

    def progress(self) -> tuple[str, int, int]:
        return self._progress

    def cancel(self) -> None:
        self._stop.set()

    def cache_counts(self) -> dict[str, int]:
        return dict(self.runner.cache.counts) if self.runner is not None else {}
