"""End to end: photo + speech -> talking-head MP4 (extract -> coefficients -> render -> paste ->
enhance -> encode)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .coeffs.generate import CoeffModels, generate_coeffs
from .config import EnhanceConfig, PipelineConfig
from .devices import auto_device
from .enhance.landmarks import track_landmarks
from .enhance.restore import FaceEnhancer
from .enhance.restore import estimate_memory as enhance_memory
from .face.extract import FaceExtractor
from .io.frames import resize_frames, to_uint8
from .io.image import ImageInput
from .io.inputs import check_inputs
from .io.video import VideoWriter
from .models import MODELS, default_checkpoint_dirs
from .options import validate
from .paste import PasteBack
from .progress import (
    Progress,
    ProgressBar,
    RunProgress,
    ShouldCancel,
    batch_done,
    run_progress,
    stage_progress,
)
from .render.infer import Renderer, RenderModels, output_size
from .render.infer import estimate_memory as render_memory
from .types import Coeffs, Face

log = logging.getLogger(__name__)

BatchHook = Callable[[np.ndarray, int, int], None]  # (uint8 frames, frames_done, total)
REFERENCE_FPS = 25.0  # reference videos drive the coefficients frame by frame, at 25 fps


class SadTalkerPipeline:
    """Loads every network once and renders many clips with them.

    Args:
        checkpoint_dirs: folders searched for checkpoints (see ``default_checkpoint_dirs``).
        device: torch device; default: the best available.
    """

    def __init__(
        self,
        checkpoint_dirs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        device: str | torch.device | None = None,
    ):
        self.dirs = default_checkpoint_dirs(checkpoint_dirs)
        self.device = auto_device(device)
        self.extractor = FaceExtractor(self.dirs, self.device)
        self._coeff_models: CoeffModels | None = None
        self._renderers: dict[tuple[int, bool], Renderer] = {}
        self._enhancers: dict[EnhanceConfig, FaceEnhancer] = {}

    def _own_entries(self) -> list:
        return [e.key for e in MODELS.entries() if e.device == self.device]

    def offload(self) -> int:
        """Move the networks on this pipeline's device to the CPU (a host needs the memory);
        the next use moves them back. Returns the bytes moved."""
        moved = MODELS.offload(self._own_entries()) if self.device.type != "cpu" else 0
        _empty_device_cache(self.device)
        return moved

    def release(self) -> int:
        """Forget every network this pipeline loaded (memory freed; the next use loads them
        again). Returns the bytes released."""
        freed = MODELS.evict(self._own_entries())
        self._coeff_models = None
        self._renderers.clear()
        self._enhancers.clear()
        self.extractor = FaceExtractor(self.dirs, self.device)
        _empty_device_cache(self.device)
        return freed

    def coeff_models(self, size: int) -> CoeffModels:
        if self._coeff_models is None:
            self._coeff_models = CoeffModels.load(self.dirs, size, self.device)
        return self._coeff_models

    def renderer(self, size: int, preprocess: str) -> Renderer:
        key = (size, "full" in preprocess)
        if key not in self._renderers:
            self._renderers[key] = Renderer(
                RenderModels.load(self.dirs, size, preprocess, self.device)
            )
        return self._renderers[key]

    def extract(self, image: ImageInput, config: PipelineConfig) -> Face:
        return self.extractor.extract(image, config.extract)

    def reference_rows(
        self,
        video: str | os.PathLike,
        config: PipelineConfig | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Per-frame coefficient rows of a reference video (its largest face, whatever
        ``face_index`` picks in the photo), for ``ref_pose`` / ``ref_eyeblink`` of
        :meth:`coefficients` and :meth:`run`. Its motion is used frame by frame, as officially:
        a video far from 25 fps gets a warning."""
        extract = (config or PipelineConfig()).extract
        rows, fps = self.extractor.extract_video(
            video, replace(extract, face_index=0), progress=progress
        )
        if abs(fps - REFERENCE_FPS) > 0.5:
            log.warning(
                "reference video %s runs at %.2f fps; its motion is used frame by frame at %g fps",
                Path(video).name,
                fps,
                REFERENCE_FPS,
            )
        return rows

    def coefficients(self, face: Face, audio, config: PipelineConfig, **refs) -> Coeffs:
        return generate_coeffs(
            face, audio, config.coeffs, models=self.coeff_models(face.size), **refs
        )

    def stream(self, face: Face, chunks, config: PipelineConfig | None = None, **kwargs):
        """Live: audio chunks as they arrive -> ``StreamBatch`` frame batches as soon as each
        is final; the same clip as offline (see :mod:`sadtalker_core.stream` for the lookahead,
        the tolerance and the keyword arguments)."""
        from .stream import stream_frames

        return stream_frames(self, face, chunks, config, **kwargs)

    def enhancer(self, config: EnhanceConfig, upscaler=None) -> FaceEnhancer:
        """The face enhancer of ``config``; with ``upscaler`` (an already loaded background
        upscaler: a spandrel ``ImageModelDescriptor`` such as a host's upscale model, or a
        ``BackgroundUpscaler``) in place of ``config.background``."""
        if upscaler is not None:
            return FaceEnhancer(self.dirs, self.device, config, background=upscaler)
        if config not in self._enhancers:
            self._enhancers[config] = FaceEnhancer(self.dirs, self.device, config)
        return self._enhancers[config]

    def iter_frames(
        self,
        face: Face,
        coeffs: Coeffs,
        config: PipelineConfig | None = None,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
        *,
        upscaler: Any = None,
        on_batch: BatchHook | None = None,
    ) -> Iterator[np.ndarray]:
        """The clip as (B, H, W, 3) uint8 RGB batches, produced as they are rendered: face frames
        in the crop's aspect ratio, or pasted into the full source picture (full/extfull); with
        ``config.enhance`` the faces restored and the frames enlarged ``upscale`` times.

        This is the one frame loop of every host (CLI, ComfyUI nodes, the A1111 tab): the same
        inputs give the same frames everywhere.

        Args:
            progress: ``(frames_done, frames_total)`` once each batch is complete, before it is
                handed over; it may raise to cancel.
            should_cancel: checked before each batch; True raises ``CancelledError``.
            upscaler: with ``config.enhance``: an already loaded background upscaler (a spandrel
                ``ImageModelDescriptor``, e.g. a host's upscale model, used where it is, or a
                ``BackgroundUpscaler``) in place of ``config.enhance.background``.
            on_batch: ``(frames, frames_done, frames_total)`` with each finished uint8 batch,
                after ``progress`` and before the batch is handed over (live previews).

        Raises:
            OptionError: ``upscaler`` without ``config.enhance`` (the background upscaler works
                inside the enhancer).
        """
        cfg = config or PipelineConfig()
        if upscaler is not None:  # the rule between the two options, as for a named upscaler
            validate({"background_enhancer": "upscaler", "enhancer": cfg.enhance})
        renderer = self.renderer(face.size, face.preprocess)
        pasted = "full" in face.preprocess
        paste = PasteBack(face, self.device, cfg.blend) if pasted else None
        enhancer = self.enhancer(cfg.enhance, upscaler) if cfg.enhance is not None else None
        out_hw = output_size(face)
        total = coeffs.num_frames
        keypoints: list[tuple[torch.Tensor, torch.Tensor]] = []
        batches = renderer.iter_batches(
            face, coeffs, cfg.render, None, should_cancel, lambda *kp: keypoints.append(kp)
        )
        done = 0
        for batch in batches:
            if enhancer is None:
                frames = paste(batch) if paste is not None else to_uint8(resize_frames(batch, out_hw))
            else:
                # frames stay on the device into the enhancer, quantised to 8 bits as the
                # official enhancer sees them (it reads the rendered video's frames)
                x = paste.tensor(batch) if paste is not None else resize_frames(batch, out_hw)
                x = x.mul(255.0).round_().clamp_(0, 255).div_(255.0)
                kp_source, kp_driving = keypoints.pop()
                # the renderer knows where the head is: no face detection on the frames
                landmarks = track_landmarks(face, kp_source, kp_driving, x.shape[2:], pasted)
                frames = to_uint8(enhancer.enhance_tensor(x, landmarks))
            keypoints.clear()
            done = batch_done(frames, done, total, progress, on_batch)
            yield frames

    def render_to_file(
        self,
        face: Face,
        coeffs: Coeffs,
        out_path: str | os.PathLike,
        config: PipelineConfig | None = None,
        progress: RunProgress = None,
        should_cancel: ShouldCancel | None = None,
        *,
        upscaler: Any = None,
        on_batch: BatchHook | None = None,
    ) -> Path:
        """Render, paste back (full modes), enhance and encode as frames are produced (see
        :meth:`iter_frames` for ``upscaler`` and ``on_batch``); returns the MP4 path.

        The file is written under a temporary name and renamed when complete: an error or a
        cancel leaves no output file.

        ``progress``: a ``(stage, done, total)`` callback, ``True`` for a tqdm bar on stderr,
        ``False`` for none; by default a bar in an interactive session (terminal, IPython,
        Jupyter). Stages are also logged at INFO level (``logging`` logger ``sadtalker_core``).
        """
        cfg = config or PipelineConfig()
        report = run_progress(progress)
        log.info("render: %d frames at %g fps -> %s", coeffs.num_frames, coeffs.fps, out_path)

        frames = self.iter_frames(
            face,
            coeffs,
            cfg,
            stage_progress(report, "render"),
            should_cancel,
            upscaler=upscaler,
            on_batch=on_batch,
        )
        with VideoWriter(
            out_path,
            fps=coeffs.fps,
            audio=coeffs.audio,
            sample_rate=coeffs.sample_rate,
            crf=cfg.crf,
        ) as writer:
            for batch in frames:
                writer.write(batch)
        return writer.path

    def run(
        self,
        source_image: ImageInput,
        driven_audio,
        out_path: str | os.PathLike,
        config: PipelineConfig | None = None,
        ref_eyeblink: np.ndarray | None = None,
        ref_pose: np.ndarray | None = None,
        progress: RunProgress = None,
        should_cancel: ShouldCancel | None = None,
    ) -> Path:
        """One clip end to end. ``driven_audio`` is anything ``load_audio`` accepts, or None with
        ``config.coeffs.idle_seconds`` set; ``ref_eyeblink``/``ref_pose`` are per-frame coefficient
        rows of reference videos (``FaceExtractor.extract_video``).

        Input files are checked first (``check_inputs``): a wrong path or a file of the wrong
        kind is reported before any network loads. ``progress`` as in :meth:`render_to_file`:
        a callback gets ``("extract", 1, 1)``, ``("coefficients", 1, 1)``, then
        ``("render", frames_done, frames_total)`` after each batch."""
        cfg = config or PipelineConfig()
        check_inputs(source_image, driven_audio, ref_eyeblink, ref_pose)
        report = run_progress(progress)
        log.info("extract: the face of %s", _describe(source_image))
        face = self.extract(source_image, cfg)
        if report is not None:
            report("extract", 1, 1)
        log.info("coefficients: %s", _describe(driven_audio, "idle motion"))
        # our own bar follows the networks step by step; a caller's callback gets one call
        steps = {"progress": stage_progress(report, "coefficients")}
        coeffs = self.coefficients(
            face,
            driven_audio,
            cfg,
            ref_eyeblink=ref_eyeblink,
            ref_pose=ref_pose,
            **(steps if isinstance(report, ProgressBar) else {}),
        )
        if report is not None and not isinstance(report, ProgressBar):
            report("coefficients", 1, 1)
        return self.render_to_file(face, coeffs, out_path, cfg, report or False, should_cancel)


def estimate_memory(config: PipelineConfig, size: int | None = None) -> int:
    """Bytes of device memory a run of ``config`` needs while rendering: the renderer at the
    render batch (``size``: the face's render size, default ``config.extract.size``), plus the
    enhancer when it is on."""
    need = render_memory(size or config.extract.size, config.render.batch_size)
    if config.enhance is not None:
        need += enhance_memory(config.enhance.batch_size)
    return need


def _describe(source: object, none: str = "") -> str:
    """A short name of an input for log lines."""
    if source is None:
        return none
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return type(source).__name__


def _empty_device_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
