"""The driver's side of a Ray batch: actors started and replaced, clips queued, dispatched
(a retry goes to a worker that has not tried the clip when there is one), retried, cancelled
and recorded (:class:`Schedule`, one run of a ``RayBatch``)."""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SadTalkerError
from .driver import BatchDriver
from .jobs import DONE, FAILED, ClipResult, Job
from .ray_actor import CANCELLED, ClipWorker, FaceDirectory
from .ray_results import mark_folders, returns_bytes, write_returned

if TYPE_CHECKING:
    from .ray_batch import RayBatch

log = logging.getLogger(__name__)


class WorkerSlot:
    """The driver's view of one actor."""

    def __init__(self, handle: Any, ready: Any):
        self.handle, self.ready_ref = handle, ready
        self.info: dict = {}
        self.job: Job | None = None
        self.alive = True

    @property
    def key(self) -> str:
        return self.info.get("worker", str(id(self)))


class Schedule:
    """One run of a :class:`RayBatch`: actors, queue, retries, results."""

    def __init__(self, batch: RayBatch, ray: Any, driver: BatchDriver, todo: list[Job]):
        self.b, self.ray, self.driver = batch, ray, driver
        self.pending: deque[Job] = deque(todo)
        self.attempts: dict[str, int] = {j.clip: 0 for j in todo}
        self.tried: dict[str, set[str]] = {j.clip: set() for j in todo}
        self.workers: list[WorkerSlot] = []
        self.inflight: dict[Any, WorkerSlot] = {}
        self.markers: list[Path] = []  # the auto mode's marker files (ray_results)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.gpu = gpus > 0 if batch.use_gpus is None else batch.use_gpus
        per = 1 if self.gpu else batch.cpus_per_worker
        fit = gpus if self.gpu else int(resources.get("CPU", 1)) // per
        self.count = max(1, min(batch.workers or fit or 1, len(todo)))
        self.replacements = self.count  # dead workers replaced at most this many times

    # -- setup
    def _spawn(self) -> None:
        ray = self.ray
        actor = ray.remote(ClipWorker).options(
            num_cpus=1 if self.gpu else self.b.cpus_per_worker,
            num_gpus=1 if self.gpu else 0,
            max_concurrency=2,
            max_restarts=0,
        )
        device = "cuda" if self.gpu else "cpu"
        threads = 0 if self.gpu else self.b.cpus_per_worker
        handle = actor.remote(self.b.spec, device, self.directory, threads)
        worker = WorkerSlot(handle, handle.ready.remote(self.folders))
        self.workers.append(worker)

    def run(self) -> None:
        ray = self.ray
        self.directory = ray.remote(FaceDirectory).options(num_cpus=0).remote()
        try:
            self.folders = mark_folders(self.b.results, self.pending, self.markers)
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

    def _started(self, w: WorkerSlot, ref: Any) -> None:
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

    def _send(self, w: WorkerSlot, job: Job) -> None:
        self.attempts[job.clip] += 1
        self.tried[job.clip].add(w.key)
        return_bytes = returns_bytes(self.b.results, job, w.info["writable"])
        sent = Job(job.image.absolute(), job.audio.absolute() if job.audio else None,
                   job.output.absolute())  # fmt: skip
        w.job = job
        self.inflight[w.handle.run.remote(tuple(sent), return_bytes, self.attempts[job.clip])] = w
        if self.b.on_dispatch is not None:
            self.b.on_dispatch(job, w.info)

    def _finished(self, w: WorkerSlot, ref: Any) -> None:
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

    def _lost(self, w: WorkerSlot, error: Exception, job: Job | None = None) -> None:
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
        write_returned(job, result)
        self.driver.finish(result)
