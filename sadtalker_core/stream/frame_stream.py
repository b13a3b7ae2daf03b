"""The frame stage of a stream (:func:`stream_frames`, ``SadTalkerPipeline.stream``): the rows of a
:class:`~sadtalker_core.stream.coeff_stream.CoeffStream` rendered batch by batch, each batch
yielded as a :class:`StreamBatch` once no later audio can change it."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..coeffs.generate import MODEL_FPS
from ..config import PipelineConfig
from ..devices import reused_cpu_memory
from ..errors import InvalidAudioError
from ..io.audio import TARGET_RATE
from ..io.frames import resize_frames, to_uint8
from ..progress import ShouldCancel, check_cancel
from ..render import compiled
from ..render.infer import (
    SEMANTIC_RADIUS,
    _precision,
    driving_sequence,
    output_size,
    source_tensor,
)
from ..render.motion import transform_keypoints
from ..types import Face
from .coeff_stream import RENDER_RADIUS, CoeffStream, check_stream_config
from .speech_stream import _Tail

if TYPE_CHECKING:
    from ..pipeline import SadTalkerPipeline

log = logging.getLogger(__name__)

Chunk = Any  # (samples, rate) or samples; samples: (n,) or (n, channels), float or integer PCM


@dataclass(frozen=True)
class StreamBatch:
    """Consecutive frames of a stream and the speech they show.

    Attributes:
        frames: (B, H, W, 3) uint8 RGB, as ``SadTalkerPipeline.iter_frames`` yields them.
        start: index of the first frame in the clip.
        fps: frame rate.
        audio: (n,) float32 16 kHz output audio of frames ``start .. start + B``: all batches'
            audio together is the offline clip's audio track (``Coeffs.audio``).
        final: True for the clip's last batch.
    """

    frames: np.ndarray
    start: int
    fps: float
    audio: np.ndarray
    final: bool

    @property
    def stop(self) -> int:
        return self.start + int(self.frames.shape[0])

    @property
    def t0(self) -> float:
        """Seconds from the clip start to the first frame."""
        return self.start / self.fps

    @property
    def t1(self) -> float:
        """Seconds from the clip start to the end of the last frame."""
        return self.stop / self.fps


def _mono_chunks(chunks: Iterable[Chunk], sample_rate: int | None) -> Iterator[tuple[Any, int]]:
    for item in chunks:
        if isinstance(item, tuple) and len(item) == 2:
            samples, rate = item
        else:
            samples, rate = item, sample_rate
        if rate is None:
            raise ValueError(
                "Give the sample rate: chunks as (samples, rate) pairs, or sample_rate=."
            )
        yield samples, int(rate)


class _FrameStage:
    """The renderer side of a stream: the coefficient rows it holds (a window of
    ``RENDER_RADIUS`` frames either side of the next batch), the source encoded once, and the
    batches rendered so far (``rendered`` frames)."""

    def __init__(self, pipe: SadTalkerPipeline, face: Face, cfg: PipelineConfig):
        renderer = pipe.renderer(face.size, face.preprocess)
        self.face, self.m, self.dev = face, renderer.models, renderer.device
        self.fps = float(cfg.coeffs.fps)
        self.batch = cfg.render.batch_size
        self.precision = cfg.render.precision
        self.compile = cfg.render.compile
        self.pasted = "full" in face.preprocess
        self.paste = None
        if self.pasted:
            from ..paste import PasteBack

            self.paste = PasteBack(face, pipe.device, cfg.blend)
        self.enhancer = pipe.enhancer(cfg.enhance) if cfg.enhance is not None else None
        self.out_hw = output_size(face)
        self.rows = _Tail(self.m.coeff_nc)
        self.rendered = 0
        self.state: dict[str, Any] = {}

    def setup(self) -> None:
        """Encode the source once (the first audio has arrived)."""
        m, dev, state = self.m, self.dev, self.state
        source = source_tensor(self.face, m.size, dev)
        src_row = torch.as_tensor(
            np.asarray(self.face.coeff_3dmm[: m.coeff_nc], np.float32), device=dev
        )
        src_window = src_row[None, :, None].expand(1, -1, 2 * SEMANTIC_RADIUS + 1)  # (1, C, 27)
        kp_canonical = m.kp_extractor(source)  # (1, 15, 3)
        state["kp_canonical"] = kp_canonical
        state["kp_source"] = transform_keypoints(kp_canonical, m.mapping(src_window))
        with _precision(self.precision, dev):
            state["feature_3d"] = m.generator.encode_source(source)
        state["compiled"] = compiled.wanted(self.compile, dev, self.precision, 0)

    def needs_rows(self) -> bool:
        """True while the next batch's windows are not all known yet."""
        return self.rows.stop < self.rendered + self.batch + RENDER_RADIUS

    def take(self, new_rows: np.ndarray, on_rows: Callable[[np.ndarray], None] | None) -> None:
        """Add final coefficient rows (output rate, 70 wide) as driving rows."""
        if new_rows.shape[0]:
            if on_rows is not None:
                on_rows(new_rows)
            seq = driving_sequence(self.face, SimpleNamespace(coeffs=new_rows), self.m.coeff_nc)
            self.rows.append(seq)

    def ready(
        self, coeffs: CoeffStream, total: int | None, should_cancel: ShouldCancel | None
    ) -> Iterator[StreamBatch]:
        """Render the batches whose rows are final: while the speech goes on (``total`` None)
        those whose last frame's window is known, at the end (``total`` frames) all the rest."""
        while True:
            stop = self.rendered + self.batch
            if total is not None:
                stop = min(stop, total)
                if stop <= self.rendered:
                    return
            elif stop + RENDER_RADIUS > self.rows.stop:  # the last frame's window must be final
                return
            check_cancel(should_cancel, f"Streaming cancelled after {self.rendered} frames.")
            frames = self.render(self.rendered, stop)
            a = int(round(self.rendered * TARGET_RATE / self.fps))
            b = int(round(stop * TARGET_RATE / self.fps))
            audio = coeffs.audio(a, b)
            self.rows.forget_before(stop - RENDER_RADIUS)
            self.rendered = stop
            yield StreamBatch(frames, stop - frames.shape[0], self.fps, audio, total == stop)

    def render(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as (B, H, W, 3) uint8."""
        m, dev, rows, state = self.m, self.dev, self.rows, self.state
        seq = torch.from_numpy(np.ascontiguousarray(rows.data)).to(dev)  # rows from rows.start
        # the 27-frame windows of coefficient_windows, clamped to frame 0 and to the last known
        # row (the clip's last frame once it has ended; never reached before)
        offsets = torch.arange(-RENDER_RADIUS, RENDER_RADIUS + 1, device=dev)
        frames = torch.arange(start, stop, device=dev)
        idx = (frames[:, None] + offsets[None, :]).clamp_(0, rows.stop - 1) - rows.start
        windows = seq[idx].transpose(1, 2)  # (B, 27, C) -> (B, C, 27)
        generator = m.generator
        motion = m.mapping(windows)
        kp_driving = transform_keypoints(state["kp_canonical"], motion)
        with _precision(self.precision, dev):
            decoder = None
            if state["compiled"] and stop - start == self.batch:
                shape = (self.batch, *state["feature_3d"].shape[-2:])
                decoder = compiled.decoder(generator.decoder, self.precision, shape)
            out = generator.animate(state["feature_3d"], state["kp_source"], kp_driving, decoder)
        return self._finish(out.float().clamp_(0.0, 1.0), kp_driving)

    def _finish(self, out: torch.Tensor, kp_driving: torch.Tensor) -> np.ndarray:
        """Rendered faces (B, 3, h, w) in [0, 1] -> output frames: pasted back or resized,
        then enhanced."""
        paste = self.paste
        if self.enhancer is None:
            return paste(out) if paste is not None else to_uint8(resize_frames(out, self.out_hw))
        from ..enhance.landmarks import track_landmarks

        x = paste.tensor(out) if paste is not None else resize_frames(out, self.out_hw)
        x = x.mul(255.0).round_().clamp_(0, 255).div_(255.0)
        landmarks = track_landmarks(
            self.face, self.state["kp_source"], kp_driving, x.shape[2:], self.pasted
        )
        return to_uint8(self.enhancer.enhance_tensor(x, landmarks))


@torch.inference_mode()
def stream_frames(
    pipe: SadTalkerPipeline,
    face: Face,
    chunks: Iterable[Chunk],
    config: PipelineConfig | None = None,
    *,
    sample_rate: int | None = None,
    ref_eyeblink: np.ndarray | None = None,
    ref_pose: np.ndarray | None = None,
    should_cancel: ShouldCancel | None = None,
    on_rows: Callable[[np.ndarray], None] | None = None,
) -> Iterator[StreamBatch]:
    """Speech arriving piece by piece -> frame batches, each as soon as it is final.

    See :mod:`sadtalker_core.stream` for the lookahead and the equality with the offline clip.

    Args:
        pipe: the pipeline (its networks are loaded once and shared with offline renders).
        face: the extract-stage result.
        chunks: audio pieces, ``(samples, rate)`` pairs or bare samples with ``sample_rate``;
            samples (n,) or (n, channels), float in [-1, 1] or integer PCM. The rate may not
            change within a stream. The iterator may block (live audio).
        config: pipeline options (coefficients, render batch/precision, paste, enhance).
        sample_rate: Hz of bare-sample chunks.
        ref_eyeblink, ref_pose: reference-video rows as for ``generate_coeffs``.
        should_cancel: checked before each batch: True raises ``CancelledError``.
        on_rows: called with each piece of final coefficient rows (tests, previews).

    Yields:
        :class:`StreamBatch` in order; the last has ``final=True``.

    Raises:
        OptionError: options a stream cannot honour (``check_stream_config``).
        InvalidAudioError: malformed chunks, or less than one frame of speech.
        CancelledError: ``should_cancel`` said so.
    """
    cfg = config or PipelineConfig()
    check_stream_config(cfg.coeffs)
    models = pipe.coeff_models(face.size)
    stage = _FrameStage(pipe, face, cfg)
    coeffs: CoeffStream | None = None
    with reused_cpu_memory(stage.dev):
        for samples, rate in _mono_chunks(chunks, sample_rate):
            if coeffs is None:
                coeffs = CoeffStream(
                    face,
                    rate,
                    cfg.coeffs,
                    models=models,
                    ref_eyeblink=ref_eyeblink,
                    ref_pose=ref_pose,
                    # one render batch of speech
                    step_frames=math.ceil(stage.batch * MODEL_FPS / stage.fps),
                )
                stage.setup()
                log.info("stream: %d Hz audio, %g fps, batches of %d", rate, stage.fps, stage.batch)
            elif rate != coeffs.sample_rate:
                raise InvalidAudioError(
                    f"The sample rate changed within the stream ({coeffs.sample_rate} -> "
                    f"{rate} Hz). Keep one rate per stream."
                )
            check_cancel(should_cancel, f"Streaming cancelled after {stage.rendered} frames.")
            # the networks run when the renderer needs rows (a lagging renderer gets all the
            # waiting speech in one call instead of one call per piece)
            stage.take(coeffs.push(samples, advance=stage.needs_rows()), on_rows)
            yield from stage.ready(coeffs, None, should_cancel)
        if coeffs is None:
            raise InvalidAudioError("The stream ended before any audio arrived.")
        stage.take(coeffs.finish(), on_rows)
        yield from stage.ready(coeffs, coeffs.out_frames, should_cancel)
        log.info("stream: %d frames", stage.rendered)
