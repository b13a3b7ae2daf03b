"""``--batch`` of the generate command: this machine's devices or a Ray cluster, the manifest,
the avatar cache and one progress bar for the whole batch."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..batch.driver import BatchState
from ..batch.jobs import DONE, FAILED, SKIPPED, ClipResult, Job, default_manifest
from ..batch.local import run_local
from ..batch.manifest import Manifest
from ..batch.runner import RunnerSpec
from ..config import PipelineConfig
from ..errors import SadTalkerError
from .common import checkpoint_dirs, say

RESULT_MODES = ("auto", "shared", "driver")  # those of batch.ray_batch (imported only for --ray)


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--batch`` runs (read back by :func:`run_batch`)."""
    g = parser.add_argument_group("batch")
    g.add_argument(
        "--manifest",
        type=Path,
        help="JSON-lines record of the finished clips (default: beside the CSV or folder, "
        "NAME.manifest.jsonl); a rerun skips the clips it shows complete and retries the failed",
    )
    g.add_argument(
        "--face_cache",
        type=Path,
        metavar="DIR",
        help="keep each photo's extracted face here (reused by later clips and runs)",
    )
    g.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS|auto|local",
        help="render the batch on a Ray cluster (pip install .[ray]): local = this machine, "
        "auto = the cluster `ray start` made here, or the head's HOST:PORT",
    )
    g.add_argument(
        "--ray_workers", type=int, help="with --ray: actors (default: one per GPU, or per CPU)"
    )
    g.add_argument(
        "--ray_results",
        choices=RESULT_MODES,
        default="auto",
        help="with --ray: shared = workers write the outputs (shared storage), driver = they "
        "send the bytes back, auto = write where a worker sees the output folder",
    )
    g.add_argument(
        "--retries",
        type=int,
        default=2,
        help="with --ray: further tries of a clip that failed or whose worker died",
    )


class BatchBar:
    """One tqdm bar for a batch (clips done, frames, clips/min, ETA, failures) on stderr."""

    def __init__(self):
        self._bar = None
        self._lock = threading.Lock()
        self._shown = (-1, 0.0)

    def __call__(self, state: BatchState) -> None:
        with self._lock:
            now = time.monotonic()
            if state.clips_done == self._shown[0] and now - self._shown[1] < 0.5:
                return
            self._shown = (state.clips_done, now)
            if self._bar is None:
                try:
                    from tqdm import tqdm
                except ImportError:
                    return
                self._bar = tqdm(
                    total=state.clips_total,
                    desc="batch",
                    unit="clip",
                    file=sys.stderr,
                    bar_format="{desc} {n_fmt}/{total_fmt} clips |{bar}| {postfix}",
                )
            eta = (
                "?" if state.eta_s is None else time.strftime("%H:%M:%S", time.gmtime(state.eta_s))
            )
            self._bar.n = state.clips_done
            self._bar.set_postfix_str(
                f"{state.frames_done} frames, {state.clips_per_min:.1f} clips/min, ETA {eta}, "
                f"{state.failed} failed",
                refresh=True,
            )

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
            self._bar = None


def run_batch(
    args: argparse.Namespace,
    cfg: PipelineConfig,
    jobs: Sequence[Job],
    devices: list[str | None],
    failed_before: int = 0,
) -> int:
    """Render the clips of ``--batch``; exit status 0 all written, 1 some failed, 130 Ctrl-C."""
    ray_address = getattr(args, "ray", None)
    if ray_address and getattr(args, "devices", None):
        raise SadTalkerError(
            "--devices is for one machine; with --ray every GPU (or CPU worker) of the cluster "
            "renders. Leave out one of them."
        )
    spec = RunnerSpec(
        tuple(checkpoint_dirs(args)), cfg, args.ref_eyeblink, args.ref_pose, args.face_cache
    )
    manifest = Manifest(args.manifest or default_manifest(args.batch))
    bar = BatchBar()
    lock = threading.Lock()
    parallel = len(devices) > 1 or bool(ray_address)
    skipped: list[ClipResult] = []

    def on_result(r: ClipResult) -> None:
        with lock:
            if r.status == DONE:
                say(f"{r.output}  ({r.worker})" if parallel else r.output)
            elif r.status == FAILED:
                image, audio = Path(r.image), Path(r.audio) if r.audio else None
                say(
                    f"error: {image.name} + {audio.name if audio else 'idle'}: {r.error}",
                    file=sys.stderr,
                )
            elif r.status == SKIPPED:
                skipped.append(r)

    try:
        if ray_address:
            from ..batch.ray_batch import RayBatch

            runner = RayBatch(
                spec,
                address=ray_address,
                workers=args.ray_workers,
                results=args.ray_results,
                retries=args.retries,
            )
            results = runner.run(jobs, manifest, bar, on_result)
        else:
            if parallel:
                say(f"{len(jobs)} clips on {len(devices)} workers: {', '.join(map(str, devices))}")
            results = run_local(jobs, spec, devices, manifest, bar, on_result)
    except KeyboardInterrupt:
        bar.close()
        say("interrupted: no partial video was kept", file=sys.stderr)
        return 130
    finally:
        bar.close()
    if skipped:
        say(
            f"{len(skipped)} of {len(jobs)} clips were already done (manifest {manifest.path}): "
            "not rendered again",
            file=sys.stderr,
        )
    failed = failed_before + sum(r.status == FAILED for r in results)
    return 1 if failed else 0
