"""What every batch engine shares on the driver's side: skipping what an earlier run finished,
the manifest, the one batch progress report, the results in job order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .jobs import DONE, FAILED, SKIPPED, ClipResult, Job
from .manifest import Manifest


@dataclass(frozen=True)
class BatchState:
    """The batch at one moment (what a host's progress bar shows).

    clips_done counts finished clips (written, failed or skipped); frames_done the frames of
    the clips written plus those of clips being rendered now; clips_per_min over the clips
    rendered in this run; eta_s: None until the first clip is done.
    """

    clips_done: int
    clips_total: int
    written: int
    failed: int
    skipped: int
    frames_done: int
    clips_per_min: float
    eta_s: float | None


BatchReport = Callable[[BatchState], None]
ResultHook = Callable[[ClipResult], None]


class BatchDriver:
    """Plans a batch against its manifest and records what the workers report.

    Args:
        jobs: every clip of the batch.
        manifest: where finished clips are recorded (None: nowhere, nothing is skipped).
        report: called with a :class:`BatchState` after every change.
        on_result: called with each finished (or skipped) clip, failures as they happen.
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        manifest: Manifest | None = None,
        report: BatchReport | None = None,
        on_result: ResultHook | None = None,
    ):
        self.jobs = [Job(*j) for j in jobs]
        self.manifest, self.report, self.on_result = manifest, report, on_result
        self.results: dict[str, ClipResult] = {}
        self._live: dict[str, int] = {}  # frames rendered of clips in progress
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._rendered = 0

    def todo(self) -> list[Job]:
        """The clips to render: all but those the manifest shows complete (recorded as
        ``skipped``). Failed clips of an earlier run are tried again."""
        out = []
        for job in self.jobs:
            if self.manifest is not None and self.manifest.complete(job):
                rec = self.manifest.records[job.clip]
                self._finish(
                    ClipResult(
                        job.clip,
                        SKIPPED,
                        str(job.output),
                        str(job.image),
                        str(job.audio or ""),
                        frames=int(rec.get("frames", 0)),
                        bytes=int(rec.get("bytes", 0)),
                        attempts=0,
                    ),
                    record=False,
                )
            else:
                out.append(job)
        self._t0 = time.perf_counter()
        self._emit()
        return out

    def frames(self, job: Job, done: int, total: int) -> None:
        """A worker's render progress on ``job`` (frames done of ``total``)."""
        with self._lock:
            self._live[job.clip] = done
        self._emit()

    def finish(self, result: ClipResult) -> None:
        """A clip is over: written or failed for good (manifest line, report, hook)."""
        self._finish(result, record=True)

    def _finish(self, result: ClipResult, record: bool) -> None:
        with self._lock:
            self.results[result.clip] = result
            self._live.pop(result.clip, None)
            if result.status in (DONE, FAILED):
                self._rendered += 1
        if record and self.manifest is not None:
            self.manifest.append(result)
        if self.on_result is not None:
            self.on_result(result)
        self._emit()

    def state(self) -> BatchState:
        with self._lock:
            res = list(self.results.values())
            live = sum(self._live.values())
            rendered = self._rendered
        count = {s: sum(r.status == s for r in res) for s in (DONE, FAILED, SKIPPED)}
        minutes = (time.perf_counter() - self._t0) / 60
        rate = rendered / minutes if minutes > 0 and rendered else 0.0
        left = len(self.jobs) - len(res)
        return BatchState(
            clips_done=len(res),
            clips_total=len(self.jobs),
            written=count[DONE],
            failed=count[FAILED],
            skipped=count[SKIPPED],
            frames_done=sum(r.frames for r in res if r.status == DONE) + live,
            clips_per_min=rate,
            eta_s=left / rate * 60 if rate else None,
        )

    def _emit(self) -> None:
        if self.report is not None:
            self.report(self.state())

    def ordered(self) -> list[ClipResult]:
        """Every clip's result in job order (clips never reached are left out)."""
        return [self.results[j.clip] for j in self.jobs if j.clip in self.results]
