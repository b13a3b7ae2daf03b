"""Batches on a Ray cluster: one actor per GPU (or per CPU worker) loads the networks once and
renders many clips. The only module of the pack that imports ``ray`` (the ``ray`` extra).

Scheduling is the driver's: each clip goes to a free actor; a clip that fails is tried again
(``retries`` times, on another actor when there is one), then reported; a worker that dies
mid-clip (killed, out of memory, node lost) has its clip tried elsewhere and is replaced.
Faces are shared between actors through the object store (one extraction per photo).

Where the videos are written (``results``):
- ``shared``: every worker writes its clip to the output path (shared storage mounted at the
  same path everywhere);
- ``driver``: every worker renders to a private temporary file and sends the MP4 bytes back;
  the driver writes them (outputs local to the driver);
- ``auto`` (default): the driver leaves a marker file in each output folder; a worker that
  finds it there and may write there writes directly, any other sends the bytes back.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import CancelledError, MissingDependencyError, SadTalkerError
from ..io.npz import atomic_file
from .cache import SharedFaces
from .driver import BatchDriver, BatchReport, ResultHook
from .jobs import DONE, FAILED, ClipResult, Job
from .manifest import Manifest
from .runner import ClipRunner, RunnerSpec

log = logging.getLogger(__name__)

RESULT_MODES = ("auto", "shared", "driver")
LOOPBACK = "127.0.0.1"
CANCELLED = "cancelled"
_MARKER = ".sadtalker-ray-{}"


def import_ray(address: str | None = "local") -> Any:
    """``ray``, imported with usage statistics off and, for a cluster of this process
    (``local``), its node kept on the loopback interface (Ray otherwise swaps 127.0.0.1 for
    the machine's routable address, as it must for a cluster of several nodes).

    Raises:
        MissingDependencyError: ray is not installed.
    """
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address in (None, "local"):
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as e:
        raise MissingDependencyError(
            "ray", "Running a batch on Ray (--ray; the pack's extra: pip install .[ray])"
        ) from e
    return ray


def is_loopback(address: str | None) -> bool:
    if address in (None, "local"):
        return True
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def connect(address: str | None = "local", num_cpus: int | None = None) -> bool:
    """Join (``ADDRESS`` / ``auto``: the cluster ``ray start`` made) or start (``local``) a Ray
    cluster, without dashboard or usage statistics. Returns True when this call connected
    (the caller then disconnects with ``ray.shutdown()``); False when this process already was.
    """
    ray = import_ray(address)
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if is_loopback(address):
        options["_node_ip_address"] = LOOPBACK
    if address in (None, "local"):
        ray.init(address="local", num_cpus=num_cpus, **options)
    else:
        try:
            ray.init(address=address, **options)
        except ConnectionError as e:
            raise SadTalkerError(
                f"No Ray cluster at '{address}' ({e}). Start one with `ray start --head` (README, "
                "Many machines), or use --ray local for a cluster on this machine only."
            ) from e
    return True


class _FaceDirectory:
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
        import ray

        self.refs[key] = ray.put(face)  # owned by this actor: outlives the worker that made it
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


class _ClipWorker:
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
            "writable": [
                f for f, marker in folders if (Path(f) / marker).exists() and os.access(f, os.W_OK)
            ],
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


class _Worker:
    """The driver's view of one actor."""

    def __init__(self, handle: Any, ready: Any):
        self.handle, self.ready_ref = handle, ready
        self.info: dict = {}
        self.job: Job | None = None
        self.alive = True

    @property
    def key(self) -> str:
        return self.info.get("worker", str(id(self)))


class RayBatch:
    """A batch on a Ray cluster (the Python entry of ``sadtalker --batch ... --ray``).

    Args:
        spec: the options every worker renders with (checkpoint folders must exist at the same
            path on every node).
        address: ``local`` (a cluster of this machine, started and stopped here), ``auto`` (the
            cluster ``ray start`` made on this machine) or ``HOST:PORT`` of a head node. Ignored
            when this process is already connected (``ray.init`` done by the caller).
        workers: number of actors (default: one per GPU of the cluster, or without GPUs one per
            ``cpus_per_worker`` CPUs).
        cpus_per_worker: CPUs (and torch threads) of a CPU actor.
        use_gpus: one GPU per actor (default: when the cluster has GPUs).
        results: ``auto`` | ``shared`` | ``driver`` (module docstring).
        retries: further tries of a clip that failed or whose worker died.
        num_cpus: CPUs of a ``local`` cluster (default: all).
        on_dispatch: ``(job, worker info)`` each time a clip is sent to a worker.

    ``run(jobs, manifest, report, on_result)`` renders and returns a :class:`ClipResult` per clip;
    ``workers_info`` lists the workers (pid, node, device, cores, torch threads).
    """

    def __init__(
        self,
        spec: RunnerSpec,
        address: str | None = "local",
        workers: int | None = None,
        cpus_per_worker: int = 1,
        use_gpus: bool | None = None,
        results: str = "auto",
        retries: int = 2,
        num_cpus: int | None = None,
        on_dispatch: Callable[[Job, dict], None] | None = None,
    ):
        if results not in RESULT_MODES:
            raise SadTalkerError(
                f"results must be one of {', '.join(RESULT_MODES)}; got {results!r}."
            )
        if retries < 0 or cpus_per_worker < 1 or (workers is not None and workers < 1):
            raise SadTalkerError("retries >= 0, cpus_per_worker >= 1 and workers >= 1, please.")
        self.spec, self.address, self.workers = spec, address, workers
        self.cpus_per_worker, self.use_gpus, self.results = cpus_per_worker, use_gpus, results
        self.retries, self.num_cpus, self.on_dispatch = retries, num_cpus, on_dispatch
        self.workers_info: list[dict] = []
        self.lost_workers = 0

    def run(
        self,
        jobs: Sequence[Job],
        manifest: Manifest | None = None,
        report: BatchReport | None = None,
        on_result: ResultHook | None = None,
    ) -> list[ClipResult]:
        """Render ``jobs``; clips the manifest shows complete are skipped. Ctrl-C cancels every
        worker at its next batch of frames (no partial file), then raises KeyboardInterrupt.

        Raises:
            SadTalkerError: the workers cannot start (a missing checkpoint), or all died.
        """
        ray = import_ray(self.address)
        owned = connect(self.address, self.num_cpus)
        driver = BatchDriver(jobs, manifest, report, on_result)
        try:
            todo = driver.todo()
            if todo:
                _Schedule(self, ray, driver, todo).run()
            return driver.ordered()
        finally:
            if owned:
                ray.shutdown()


class _Schedule:
    """One run of a :class:`RayBatch`: actors, queue, retries, results."""

    def __init__(self, batch: RayBatch, ray: Any, driver: BatchDriver, todo: list[Job]):
        self.b, self.ray, self.driver = batch, ray, driver
        self.pending: deque[Job] = deque(todo)
        self.attempts: dict[str, int] = {j.clip: 0 for j in todo}
        self.tried: dict[str, set[str]] = {j.clip: set() for j in todo}
        self.workers: list[_Worker] = []
        self.inflight: dict[Any, _Worker] = {}
        self.markers: list[Path] = []
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.gpu = gpus > 0 if batch.use_gpus is None else batch.use_gpus
        per = 1 if self.gpu else batch.cpus_per_worker
        fit = gpus if self.gpu else int(resources.get("CPU", 1)) // per
        self.count = max(1, min(batch.workers or fit or 1, len(todo)))
        self.replacements = self.count  # dead workers replaced at most this many times

    # -- setup
    def _folders(self) -> list[tuple[str, str]]:
        if self.b.results == "driver":
            return []
        marker = _MARKER.format(uuid.uuid4().hex)
        out = []
        for folder in sorted({j.output.absolute().parent for j in self.pending}):
            folder.mkdir(parents=True, exist_ok=True)
            if self.b.results == "auto":
                (folder / marker).touch()
                self.markers.append(folder / marker)
            out.append((str(folder), marker))
        return out

    def _spawn(self) -> None:
        ray = self.ray
        actor = ray.remote(_ClipWorker).options(
            num_cpus=1 if self.gpu else self.b.cpus_per_worker,
            num_gpus=1 if self.gpu else 0,
            max_concurrency=2,
            max_restarts=0,
        )
        device = "cuda" if self.gpu else "cpu"
        threads = 0 if self.gpu else self.b.cpus_per_worker
        handle = actor.remote(self.b.spec, device, self.directory, threads)
        worker = _Worker(handle, handle.ready.remote(self.folders))
        self.workers.append(worker)

    def run(self) -> None:
        ray = self.ray
        self.directory = ray.remote(_FaceDirectory).options(num_cpus=0).remote()
        try:
            self.folders = self._folders()
            for _ in range(self.count):
                self._spawn()
            self._loop()
        except KeyboardInterrupt:
            self._cancel()
            raise
        finally:
            for m in self.markers:
                m.unlink(missing_ok=True)
            for w in self.workers:
                ray.kill(w.handle)
            ray.kill(self.directory)

    # -- the loop
    def _loop(self) -> None:
        ray = self.ray
        polled = time.monotonic()
        while self.pending or self.inflight:
            self._dispatch()
            starting = {w.ready_ref: w for w in self.workers if w.alive and w.ready_ref is not None}
            if not self.inflight and not starting:
                raise SadTalkerError(
                    f"No Ray worker is left to render {len(self.pending)} clip(s) "
                    f"({self.b.lost_workers} lost); see the Ray logs of the cluster."
                )
            refs = list(self.inflight) + list(starting)
            done, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            for ref in done:
                if ref in starting:
                    self._started(starting[ref], ref)
                else:
                    self._finished(self.inflight.pop(ref), ref)
            if time.monotonic() - polled > 1.0:
                self._poll_frames()
                polled = time.monotonic()

    def _started(self, w: _Worker, ref: Any) -> None:
        w.ready_ref = None
        try:
            w.info = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, SadTalkerError):  # a missing checkpoint: no worker can start
                raise cause from None
            raise SadTalkerError(f"A Ray worker could not start: {e}") from e
        except self.ray.exceptions.RayActorError as e:
            self._lost(w, e)
            return
        self.b.workers_info.append(w.info)

    def _dispatch(self) -> None:
        idle = [w for w in self.workers if w.alive and w.info and w.job is None]
        alive = {w.key for w in self.workers if w.alive}
        for job in list(self.pending):
            if not idle:
                return
            tried = self.tried[job.clip]
            fresh = [w for w in idle if w.key not in tried]
            if not fresh and alive - tried - {w.key for w in idle}:
                continue  # a worker that has not tried this clip is busy: wait for it
            w = (fresh or idle)[0]
            idle.remove(w)
            self.pending.remove(job)
            self._send(w, job)

    def _send(self, w: _Worker, job: Job) -> None:
        self.attempts[job.clip] += 1
        self.tried[job.clip].add(w.key)
        folder = str(job.output.absolute().parent)
        return_bytes = self.b.results == "driver" or (
            self.b.results == "auto" and folder not in w.info["writable"]
        )
        sent = Job(job.image.absolute(), job.audio.absolute() if job.audio else None,
                   job.output.absolute())  # fmt: skip
        w.job = job
        self.inflight[w.handle.run.remote(tuple(sent), return_bytes, self.attempts[job.clip])] = w
        if self.b.on_dispatch is not None:
            self.b.on_dispatch(job, w.info)

    def _finished(self, w: _Worker, ref: Any) -> None:
        job, w.job = w.job, None
        assert job is not None
        try:
            result: ClipResult = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            self._lost(w, e, job)
            return
        except self.ray.exceptions.RayTaskError as e:  # not a clip error: run() reports those
            result = ClipResult.failure(job, str(e), worker=w.key, attempts=self.attempts[job.clip])
        result.clip, result.output = job.clip, str(job.output)
        if result.status == CANCELLED:
            return
        if result.status == FAILED and self.attempts[job.clip] <= self.b.retries:
            log.warning("clip %s failed on %s (%s): trying again", job.clip, w.key, result.error)
            self.pending.appendleft(job)
            return
        self._record_done(job, result)

    def _lost(self, w: _Worker, error: Exception, job: Job | None = None) -> None:
        """A worker died (killed, out of memory, node gone): its clip goes back to the queue
        (or is reported after ``retries``), a new worker takes its place."""
        w.alive = False
        self.b.lost_workers += 1
        log.warning("Ray worker %s lost: %s", w.key, str(error).splitlines()[0])
        if job is not None:
            # a worker killed while writing leaves its partial file (VideoWriter's name)
            pid = w.info.get("pid")
            partial = job.output.with_name(f".{job.output.stem}.{pid}.partial{job.output.suffix}")
            if pid and job.output.parent.is_dir():
                partial.unlink(missing_ok=True)
            if self.attempts[job.clip] <= self.b.retries:
                self.pending.appendleft(job)
            else:
                self.driver.finish(
                    ClipResult.failure(
                        job,
                        f"its worker was lost {self.attempts[job.clip]} times (last: {w.key})",
                        attempts=self.attempts[job.clip],
                        worker=w.key,
                    )
                )
        if self.replacements > 0:
            self.replacements -= 1
            self._spawn()

    def _poll_frames(self) -> None:
        busy = [w for w in self.workers if w.alive and w.job is not None]
        if not busy:
            return
        refs = [w.handle.progress.remote() for w in busy]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0.5)
        for w, ref in zip(busy, refs):
            if ref in ready and w.job is not None:
                try:
                    clip, done, total = self.ray.get(ref)
                except self.ray.exceptions.RayError:
                    continue  # a dead worker: its run() reference says so
                if clip == str(w.job.output.absolute()):
                    self.driver.frames(w.job, done, total)

    def _cancel(self) -> None:
        """Ctrl-C: every busy worker stops at its next batch of frames and deletes its partial
        file; clips already finished are recorded."""
        for w in self.workers:
            if w.alive and w.job is not None:
                w.handle.cancel.remote()
        deadline = time.monotonic() + 60
        while self.inflight and time.monotonic() < deadline:
            done, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=1.0)
            for ref in done:
                w = self.inflight.pop(ref)
                job, w.job = w.job, None
                try:
                    result = self.ray.get(ref)
                except self.ray.exceptions.RayError:
                    continue
                if result.status == DONE and job is not None:
                    self._record_done(job, result)

    def _record_done(self, job: Job, result: ClipResult) -> None:
        result.clip, result.output = job.clip, str(job.output)
        if result.data is not None:
            with atomic_file(job.output) as f:
                f.write(result.data)
            result.data = None
        self.driver.finish(result)


def run_on_ray(
    jobs: Sequence[Job],
    spec: RunnerSpec,
    manifest: Manifest | None = None,
    report: BatchReport | None = None,
    on_result: ResultHook | None = None,
    **options: Any,
) -> list[ClipResult]:
    """``RayBatch(spec, **options).run(jobs, manifest, report, on_result)``."""
    return RayBatch(spec, **options).run(jobs, manifest, report, on_result)
