"""One clip renderer for every batch engine (worker threads, Ray actors): networks, enhancer and
reference rows loaded once, faces through the avatar cache, one :class:`ClipResult` per clip."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..coeffs.files import load_coeff_rows
from ..config import ExtractConfig, PipelineConfig
from ..errors import CancelledError, SadTalkerError
from ..pipeline import SadTalkerPipeline
from ..progress import Progress, ShouldCancel
from .cache import FaceCache, SharedFaces
from .jobs import DONE, ClipResult, Job


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a worker needs to render clips (picklable: sent to Ray actors as it is).

    checkpoint_dirs: folders searched for the checkpoints (the same on every machine);
    config: the run's options; ref_eyeblink / ref_pose: reference videos or coefficient files
    (.npz/.mat) for every clip; face_cache: the on-disk avatar cache folder (None: none);
    face_cache_enabled: False turns the avatar cache off (measurements).
    """

    checkpoint_dirs: tuple[Path, ...]
    config: PipelineConfig = PipelineConfig()
    ref_eyeblink: Path | None = None
    ref_pose: Path | None = None
    face_cache: Path | None = None
    face_cache_enabled: bool = True


def reference_rows(path: Path | None, pipe: SadTalkerPipeline, extract: ExtractConfig):
    """Coefficient rows of a reference video or coefficient file (None: none)."""
    if path is None:
        return None
    if path.suffix.lower() in (".npz", ".mat"):
        return load_coeff_rows(path)
    return pipe.reference_rows(path, PipelineConfig(extract=extract))


class ClipRunner:
    """Renders clips on one device.

    Args:
        spec: the batch's options.
        device: torch device (None: the best available).
        cache: avatar cache (default: a new one over ``spec.face_cache``).
        shared: the cross-process tier of a new cache (Ray).
        worker: the name recorded in each result.

    Raises:
        SadTalkerError: a checkpoint, the enhancer's file or a reference is missing (before any
            clip).
    """

    def __init__(
        self,
        spec: RunnerSpec,
        device: str | None = None,
        cache: FaceCache | None = None,
        shared: SharedFaces | None = None,
        worker: str = "",
    ):
        self.spec, self.worker = spec, worker
        self.pipe = SadTalkerPipeline(list(spec.checkpoint_dirs), device)
        cfg = spec.config
        if cfg.enhance is not None:
            self.pipe.enhancer(cfg.enhance)
        self.refs: dict[str, np.ndarray | None] = {
            "ref_eyeblink": reference_rows(spec.ref_eyeblink, self.pipe, cfg.extract),
            "ref_pose": reference_rows(spec.ref_pose, self.pipe, cfg.extract),
        }
        self.cache = cache or FaceCache(
            spec.face_cache, shared=shared, enabled=spec.face_cache_enabled
        )

    def run(
        self,
        job: Job,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
        return_bytes: bool = False,
        attempts: int = 1,
    ) -> ClipResult:
        """Render one clip to ``job.output`` (or, with ``return_bytes``, to a private temporary
        file whose bytes come back in ``ClipResult.data``). A clip's own error (no face, bad
        audio...) becomes a ``failed`` result; a cancel raises CancelledError and leaves no
        file; anything else (a bug, out of memory) propagates."""
        t0 = time.perf_counter()
        cfg = self.spec.config
        tmp_dir = Path(tempfile.mkdtemp(prefix="sadtalker-clip-")) if return_bytes else None
        try:
            face, source = self.cache.get(
                job.image, cfg.extract, lambda: self.pipe.extract(job.image, cfg)
            )
            coeffs = self.pipe.coefficients(face, job.audio, cfg, **self.refs)
            target = tmp_dir / job.output.name if tmp_dir is not None else job.output

            def stage(name: str, done: int, total: int) -> None:
                if progress is not None and name == "render":
                    progress(done, total)

            path = self.pipe.render_to_file(face, coeffs, target, cfg, stage, should_cancel)
            data = path.read_bytes() if tmp_dir is not None else None
            return ClipResult(
                job.clip,
                DONE,
                str(job.output),
                str(job.image),
                str(job.audio or ""),
                seconds=round(time.perf_counter() - t0, 3),
                frames=coeffs.num_frames,
                bytes=len(data) if data is not None else path.stat().st_size,
                attempts=attempts,
                worker=self.worker,
                face=source,
                data=data,
            )
        except CancelledError:
            raise
        except SadTalkerError as e:
            return ClipResult.failure(
                job,
                str(e),
                seconds=round(time.perf_counter() - t0, 3),
                attempts=attempts,
                worker=self.worker,
            )
        finally:
            if tmp_dir is not None:
                shutil.rmtree(tmp_dir, ignore_errors=True)


def worker_name(device: str | None) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{device or 'auto'}"
