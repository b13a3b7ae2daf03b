"""One machine's batch engine: one worker thread per device (its own networks), clips taken from
one queue as workers become free; the avatar cache is shared by the threads."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

from ..errors import CancelledError
from .cache import FaceCache
from .driver import BatchDriver, BatchReport, ResultHook
from .jobs import ClipResult, Job
from .manifest import Manifest
from .runner import ClipRunner, RunnerSpec


def run_local(
    jobs: Sequence[Job],
    spec: RunnerSpec,
    devices: Sequence[str | None] = (None,),
    manifest: Manifest | None = None,
    report: BatchReport | None = None,
    on_result: ResultHook | None = None,
    stop: threading.Event | None = None,
    cache: FaceCache | None = None,
) -> list[ClipResult]:
    """Render ``jobs`` on this machine, one worker per entry of ``devices``.

    Clips the manifest shows complete are skipped; every other clip gets a manifest line as
    it finishes. A clip's own error is a ``failed`` result and the others go on; a worker that
    cannot start (missing checkpoint) or an unexpected error stops the run and is raised.
    Ctrl-C (KeyboardInterrupt) or ``stop`` stops every worker at its next batch of frames,
    deleting the partial videos; KeyboardInterrupt is raised again.

    Returns:
        One result per clip reached, in job order (``skipped`` for clips done before).
    """
    driver = BatchDriver(jobs, manifest, report, on_result)
    todo = driver.todo()
    stop = stop or threading.Event()
    cache = cache or FaceCache(spec.face_cache, enabled=spec.face_cache_enabled)
    devices = list(devices) or [None]
    if not todo:
        return driver.ordered()
    if len(devices) == 1 or len(todo) == 1:
        runner = ClipRunner(spec, devices[0], cache, worker=str(devices[0] or "auto"))
        for job in todo:
            if stop.is_set():
                break
            try:
                driver.finish(_run(runner, driver, job, stop))
            except CancelledError:
                break
        return driver.ordered()

    pending: queue.Queue[Job] = queue.Queue()
    for job in todo:
        pending.put(job)
    errors: list[BaseException] = []

    def work(device: str | None) -> None:
        try:
            runner = ClipRunner(spec, device, cache, worker=str(device or "auto"))
            while not stop.is_set():
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                driver.finish(_run(runner, driver, job, stop))
        except CancelledError:
            return
        except BaseException as e:  # a worker that cannot go on stops the run, raised below
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=work, args=(d,), daemon=True) for d in devices]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
        raise
    if errors:
        raise errors[0]
    return driver.ordered()


def _run(runner: ClipRunner, driver: BatchDriver, job: Job, stop: threading.Event) -> ClipResult:
    return runner.run(
        job,
        progress=lambda done, total: driver.frames(job, done, total),
        should_cancel=stop.is_set,
    )
