"""Batches on a Ray cluster: one actor per GPU (or per CPU worker) loads the networks once and
renders many clips (``sadtalker --batch ... --ray``; the ``ray`` extra, imported only when a
Ray batch runs, by :mod:`.ray_cluster`).

Scheduling is the driver's: each clip goes to a free actor; a clip that fails is tried again
(``retries`` times, on another actor when there is one), then reported; a worker that dies
mid-clip (killed, out of memory, node lost) has its clip tried elsewhere and is replaced.
Faces are shared between actors through the object store (one extraction per photo).

The parts: :mod:`.ray_cluster` (joining or starting the cluster), :mod:`.ray_actor` (the
workers and the face directory), :mod:`.ray_schedule` (queue, dispatch, retries, cancel) and
:mod:`.ray_results` (where the videos are written: ``results`` ``shared``, ``driver`` or
``auto``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import SadTalkerError
from .driver import BatchDriver, BatchReport, ResultHook
from .jobs import ClipResult, Job
from .manifest import Manifest
from .ray_actor import CANCELLED, RayFaces
from .ray_cluster import LOOPBACK, connect, import_ray, is_loopback
from .ray_results import RESULT_MODES, check_mode
from .ray_schedule import Schedule
from .runner import RunnerSpec

__all__ = [
    "CANCELLED",
    "LOOPBACK",
    "RESULT_MODES",
    "RayBatch",
    "RayFaces",
    "connect",
    "import_ray",
    "is_loopback",
    "run_on_ray",
]


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
        results: ``auto`` | ``shared`` | ``driver`` (:mod:`.ray_results`).
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
        check_mode(results)
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
                Schedule(self, ray, driver, todo).run()
            return driver.ordered()
        finally:
            if owned:
                ray.shutdown()


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
