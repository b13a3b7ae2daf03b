"""Render stage: Face + Coeffs -> a stream of face frames, batch by batch, memory flat in clip length."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import RenderConfig
from ..devices import reused_cpu_memory
from ..errors import ShapeError
from ..io.frames import to_float
from ..models import default_checkpoint_dirs, network_file, network_ref
from ..progress import Progress, ShouldCancel, check_cancel
from ..types import Coeffs, Face
from . import compiled
from .conv import winograd
from .motion import HeadMotion, transform_keypoints

log = logging.getLogger(__name__)

SEMANTIC_RADIUS = 13  # a coefficient window spans frames f-13 .. f+13 (27 steps)


class RenderModels:
    """The three renderer networks of one render size, loaded once and reused for many clips.

    Each is a module or a handle on the model cache (``ref()`` -> module on its device): handles
    follow a host's offload/evict between clips.
    """

    def __init__(
        self,
        kp_extractor: torch.nn.Module | Callable[[], torch.nn.Module],
        generator: torch.nn.Module | Callable[[], torch.nn.Module],
        mapping: torch.nn.Module | Callable[[], torch.nn.Module],
        size: int,
    ):
        self._nets = {"kp_extractor": kp_extractor, "generator": generator, "mapping": mapping}
        self.size = size

    @classmethod
    def load(
        cls,
        checkpoint_dirs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        size: int = 256,
        preprocess: str = "crop",
        device: str | torch.device = "cpu",
    ) -> RenderModels:
        dirs = default_checkpoint_dirs(checkpoint_dirs)
        return cls(
            kp_extractor=network_ref(
                "kp_extractor", network_file("kp_extractor", dirs, size), device
            ),
            generator=network_ref("generator", network_file("generator", dirs, size), device),
            mapping=network_ref("mapping", network_file("mapping", dirs, size, preprocess), device),
            size=size,
        )

    def _net(self, name: str) -> torch.nn.Module:
        net = self._nets[name]
        return net if isinstance(net, torch.nn.Module) else net()

    @property
    def kp_extractor(self) -> torch.nn.Module:
        return self._net("kp_extractor")

    @property
    def generator(self) -> torch.nn.Module:
        return self._net("generator")

    @property
    def mapping(self) -> torch.nn.Module:
        return self._net("mapping")

    @property
    def coeff_nc(self) -> int:
        return self.mapping.cfg.coeff_nc

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device


def driving_sequence(face: Face, coeffs: Coeffs, coeff_nc: int) -> np.ndarray:
    """(T, coeff_nc) rows the MappingNet windows are cut from: the stage's 70 coefficients, plus
    the source's three crop parameters for the 73-input (full/extfull) MappingNet."""
    seq = np.asarray(coeffs.coeffs, dtype=np.float32)
    if seq.ndim != 2 or seq.shape[1] != 70:
        raise ShapeError(f"coefficients must be (T, 70); got {seq.shape}.")
    if coeff_nc == 73:
        crop = np.broadcast_to(face.coeff_3dmm[70:73].astype(np.float32), (seq.shape[0], 3))
        seq = np.concatenate([seq, crop], axis=1)
    elif coeff_nc != 70:
        raise ShapeError(f"MappingNet takes {coeff_nc} coefficients; expected 70 or 73.")
    return seq


def coefficient_windows(seq: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Windows of 27 frames centred on ``frames``, edge-padded (indices clamped to the clip).

    Args:
        seq: (T, C) coefficient rows.
        frames: (B,) int64 frame indices.

    Returns:
        (B, C, 27) windows, coefficient-major as MappingNet expects.
    """
    offsets = torch.arange(-SEMANTIC_RADIUS, SEMANTIC_RADIUS + 1, device=seq.device)
    idx = (frames[:, None] + offsets[None, :]).clamp_(0, seq.shape[0] - 1)  # (B, 27)
    return seq[idx].transpose(1, 2)  # (B, 27, C) -> (B, C, 27)


def source_tensor(face: Face, size: int, device: torch.device) -> torch.Tensor:
    """The face crop as the renderer's (1, 3, size, size) float32 input in [0, 1]."""
    crop = torch.from_numpy(np.ascontiguousarray(face.crop)).to(device)
    img = to_float(crop[None])  # (H, W, 3) -> (1, 3, H, W)
    if img.shape[-2:] != (size, size):
        img = F.interpolate(
            img, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return img


def resolve_precision(precision: str, device: torch.device) -> str:
    """The numerics ``precision`` means on ``device``: ``auto`` is tf32 on CUDA and fp32
    elsewhere; ``tf32`` exists only on CUDA and ``fp16`` is only fast on GPUs: elsewhere (tf32)
    and on the CPU (fp16) they fall back to fp32, with a warning."""
    if precision == "auto":
        return "tf32" if device.type == "cuda" else "fp32"
    if precision == "tf32" and device.type != "cuda":
        _warn_once(precision, device, "tf32 needs a CUDA device")
        return "fp32"
    if precision == "fp16" and device.type == "cpu":
        _warn_once(precision, device, "CPUs have no fast fp16 convolutions (bf16 has them)")
        return "fp32"
    return precision


_FALLBACK_WARNED: set[tuple[str, str]] = set()


def _warn_once(precision: str, device: torch.device, why: str) -> None:
    if (precision, device.type) not in _FALLBACK_WARNED:
        _FALLBACK_WARNED.add((precision, device.type))
        log.warning("precision %s: %s; rendering in fp32 on %s", precision, why, device)


@contextlib.contextmanager
def _precision(precision: str, device: torch.device):
    """Numerics of the generator: exact fp32 (TF32 off on CUDA, direct convolutions), TF32,
    bf16/fp16 autocast, or ``auto`` (TF32 on CUDA; on CPU fp32 with Winograd convolutions)."""
    fast_cpu_convs = precision == "auto" and device.type == "cpu"
    precision = resolve_precision(precision, device)
    tf32 = _tf32(precision == "tf32") if device.type == "cuda" else contextlib.nullcontext()
    with tf32, winograd(fast_cpu_convs):
        if precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield
        else:
            yield


class _TF32State:
    """The process-wide TF32 switches, shared by concurrent renders (one worker per GPU): the
    first render in sets them and saves the host's values, the last one out restores them."""

    lock = threading.Lock()
    users = 0
    saved: tuple[bool, bool] | None = None


@contextlib.contextmanager
def _tf32(enabled: bool):
    state = _TF32State
    with state.lock:
        if state.users == 0:
            state.saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        state.users += 1
        torch.backends.cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        with state.lock:
            state.users -= 1
            if state.users == 0 and state.saved is not None:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = state.saved


def estimate_memory(size: int, batch_size: int) -> int:
    """Bytes of device memory a render needs, networks included (fp32/TF32; measured on an H100
    at 256 px: 2.5 GiB at batch 4, 4.4 GiB at batch 8; activations scale with the pixel count)."""
    per_frame = 0.48 * (size / 256) ** 2  # GiB
    return int((0.6 + per_frame * batch_size) * 2**30)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


KeypointHook = Callable[[torch.Tensor, torch.Tensor], None]  # (kp_source, kp_driving)


class Renderer:
    """Streams rendered face frames for (Face, Coeffs) pairs; the networks are loaded once."""

    def __init__(self, models: RenderModels):
        self.models = models
        self.device = models.device

    def iter_batches(
        self,
        face: Face,
        coeffs: Coeffs,
        config: RenderConfig | None = None,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
        on_keypoints: KeypointHook | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield the clip as consecutive (B, 3, size, size) float32 batches in [0, 1] on the device.

        User head angles requested in the coefficient stage (``input_yaw/pitch/roll``) replace
        the predicted ones frame by frame (``Coeffs.camera_degrees``).

        Args:
            face: extract-stage result (its ``size`` must equal the models').
            coeffs: coefficient-stage result, (T, 70) rows.
            config: batch size and numerics.
            progress: ``(frames_done, frames_total)`` after each batch; it may raise to cancel.
            should_cancel: checked before each batch; True raises ``CancelledError``.
            on_keypoints: called with ``(kp_source (1, K, 3), kp_driving (B, K, 3))`` just before
                each batch is yielded: where the head is in that batch (the enhancer places its
                face crops with them instead of detecting faces again).
        """
        m = self.models
        if face.size != m.size:
            raise ShapeError(
                f"The face was extracted for {face.size} px but the models render {m.size} px."
            )
        rows = driving_sequence(face, coeffs, m.coeff_nc)
        degrees = coeffs.camera_degrees()
        angles = [degrees.get(axis) for axis in ("yaw", "pitch", "roll")]
        yield from self.stream(
            source_tensor(face, m.size, self.device),
            np.asarray(face.coeff_3dmm[: m.coeff_nc], dtype=np.float32),
            rows,
            config,
            *angles,
            progress=progress,
            should_cancel=should_cancel,
            on_keypoints=on_keypoints,
        )

    @torch.inference_mode()
    def stream(
        self,
        source_image: torch.Tensor,
        source_row: np.ndarray,
        rows: np.ndarray,
        config: RenderConfig | None = None,
        yaw_deg: np.ndarray | None = None,
        pitch_deg: np.ndarray | None = None,
        roll_deg: np.ndarray | None = None,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
        on_keypoints: KeypointHook | None = None,
    ) -> Iterator[torch.Tensor]:
        """The renderer proper (``make_animation``), streaming.

        Nothing per frame is kept: each batch is produced, handed over and dropped, so memory does
        not grow with the clip length. The source is encoded and its keypoints computed once.

        Args:
            source_image: (1, 3, S, S) float in [0, 1].
            source_row: (C,) the source's coefficients (C = 70 or 73, the MappingNet width).
            rows: (T, C) driving coefficients, one row per frame.
            config: batch size and numerics.
            yaw_deg, pitch_deg, roll_deg: optional (T,) per-frame angle overrides in degrees.
            progress, should_cancel, on_keypoints: see :meth:`iter_batches`.

        Raises:
            CancelledError: ``should_cancel`` returned True.
        """
        cfg = config or RenderConfig()
        m = self.models
        dev = self.device
        total = rows.shape[0]
        seq = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).to(dev)
        angles = [
            None if a is None else torch.as_tensor(a, dtype=torch.float32, device=dev)
            for a in (yaw_deg, pitch_deg, roll_deg)
        ]
        source = source_image.to(dev, torch.float32)
        src_row = torch.as_tensor(np.asarray(source_row, dtype=np.float32), device=dev)
        src_window = src_row[None, :, None].expand(1, -1, 2 * SEMANTIC_RADIUS + 1)  # (1, C, 27)

        kp_canonical = m.kp_extractor(source)  # (1, 15, 3)
        kp_source = transform_keypoints(kp_canonical, m.mapping(src_window))
        generator = m.generator
        with _precision(cfg.precision, dev):
            feature_3d = generator.encode_source(source)  # (1, 32, 16, S/4, S/4), once per clip
        use_compiled = compiled.wanted(cfg.compile, dev, cfg.precision, total)
        compiled_batch = min(cfg.batch_size, total)  # a shorter last batch runs eagerly

        def render(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            frames = torch.arange(start, stop, device=dev)
            motion: HeadMotion = m.mapping(coefficient_windows(seq, frames))
            kp_driving = transform_keypoints(
                kp_canonical, motion, *(None if a is None else a[start:stop] for a in angles)
            )
            with _precision(cfg.precision, dev):
                decoder = None
                if use_compiled and stop - start == compiled_batch:
                    shape = (compiled_batch, *feature_3d.shape[-2:])
                    decoder = compiled.decoder(generator.decoder, cfg.precision, shape)
                out = generator.animate(feature_3d, kp_source, kp_driving, decoder)
            return out.float().clamp_(0.0, 1.0), kp_driving

        batch = cfg.batch_size
        start = 0
        with contextlib.ExitStack() as cleanup:
            cleanup.enter_context(reused_cpu_memory(dev))
            if use_compiled and dev.type != "cpu":
                # Its frozen weights must not hold GPU memory a host may reclaim between clips.
                cleanup.callback(compiled.release, generator.decoder)
            while start < total:
                check_cancel(should_cancel, f"Rendering cancelled after {start} of {total} frames.")
                stop = min(start + batch, total)
                try:
                    out, kp_driving = render(start, stop)
                except RuntimeError as e:
                    if not _is_oom(e) or batch == 1:
                        raise
                    batch = max(1, batch // 2)
                    log.warning(
                        "out of memory at batch size %d; retrying with %d", stop - start, batch
                    )
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                if on_keypoints is not None:
                    on_keypoints(kp_source, kp_driving)
                yield out
                start = stop
                if progress is not None:
                    progress(start, total)


def output_size(face: Face) -> tuple[int, int]:
    """(height, width) of a face-only output frame: the crop's aspect at width ``face.size``."""
    if face.crop_info is None:
        w, h = face.image.shape[1], face.image.shape[0]
    else:
        w, h = face.crop_info.face_size
    return int(face.size * h / w), face.size
