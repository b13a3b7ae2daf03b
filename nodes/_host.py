"""The pack's only ComfyUI adapter: model folders, device, progress/Cancel, IMAGE/AUDIO <-> core."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import torch

log = logging.getLogger(__name__)

MODEL_FOLDER = "sadtalker"  # folder_paths key; default folder ComfyUI/models/sadtalker

# Registered once, at import (add_model_folder_path keeps paths set in extra_model_paths.yaml).
folder_paths.add_model_folder_path(
    MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER)
)


def checkpoint_dirs(user_dir: str = "") -> list[str]:
    """Checkpoint folders in search order: the node's own folder (if any), then every folder
    registered under ``sadtalker`` (``models/sadtalker`` and extra_model_paths.yaml entries)."""
    dirs = [os.path.expanduser(user_dir.strip())] if user_dir and user_dir.strip() else []
    return dirs + folder_paths.get_folder_paths(MODEL_FOLDER)


def torch_device() -> torch.device:
    """ComfyUI's compute device (honours --cpu, --directml, --cuda-device ...)."""
    return comfy.model_management.get_torch_device()


def make_room(bytes_needed: int, device: torch.device) -> None:
    """Have ComfyUI unload its own models (diffusion model, VAE, ...) from ``device`` until
    ``bytes_needed`` are free there, so a SadTalker stage does not run out of memory next to them."""
    if device.type != "cpu":
        comfy.model_management.free_memory(bytes_needed, device)


def release_cache() -> None:
    """Return cached, unused device memory (cuDNN workspaces, freed activations) to the host."""
    comfy.model_management.soft_empty_cache()


class ProgressCallback:
    """Core ``progress(done, total)`` callback driving a ComfyUI progress bar.

    The bar is created on the first call, when the total is known. Each update goes through
    ComfyUI's progress hook, which raises ``InterruptProcessingException`` when the user cancels.
    """

    def __init__(self) -> None:
        self._bar: comfy.utils.ProgressBar | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = comfy.utils.ProgressBar(total)
        self._bar.update_absolute(done, total)


def check_interrupted() -> bool:
    """``should_cancel`` for core loops: raises ComfyUI's own ``InterruptProcessingException``
    when the user pressed Cancel (so ComfyUI reports an interruption, not an error)."""
    comfy.model_management.throw_exception_if_processing_interrupted()
    return False


def image_to_uint8(images: torch.Tensor) -> np.ndarray:
    """ComfyUI IMAGE (B, H, W, C) float in [0, 1] -> (B, H, W, 3) uint8 RGB (alpha dropped)."""
    u8 = images[..., :3].mul(255).round_().clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(u8.cpu().numpy())


def uint8_to_image(frames: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> ComfyUI IMAGE (B, H, W, 3) float32 in [0, 1] on the CPU."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)


def frames_to_image(batches: Iterable[np.ndarray], total: int, pad_to_even: bool) -> torch.Tensor:
    """Collect rendered uint8 batches into one IMAGE tensor without a second full-size copy.

    Args:
        batches: (B, H, W, 3) uint8 RGB numpy batches, ``total`` frames in all.
        total: number of frames the batches hold.
        pad_to_even: repeat the last row/column so height and width are even (H.264 yuv420p,
            which CreateVideo/SaveVideo write, refuses odd sizes).

    Returns:
        (total, H', W', 3) float32 in [0, 1] on the CPU. RAM: total * H' * W' * 12 bytes
        (60 s at 25 fps and 512x512 is ~4.7 GB); the IMAGE type requires float32.
    """
    out: torch.Tensor | None = None
    start = 0
    for batch in batches:
        if pad_to_even:
            h, w = batch.shape[1:3]
            batch = np.pad(batch, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if out is None:
            out = torch.empty((total, *batch.shape[1:]), dtype=torch.float32)
        stop = start + batch.shape[0]
        out[start:stop].copy_(torch.from_numpy(batch)).div_(255.0)  # uint8 -> float32 in [0, 1]
        start = stop
    if out is None or start != total:
        raise RuntimeError(f"the renderer produced {start} frames; {total} were expected")
    return out


def audio_to_comfy(waveform: np.ndarray, sample_rate: int) -> dict:
    """(N,) float32 mono samples -> ComfyUI AUDIO ``{"waveform": (1, 1, N), "sample_rate"}``."""
    wave = torch.from_numpy(np.array(waveform, dtype=np.float32))  # a copy: cached input stays
    return {"waveform": wave.reshape(1, 1, -1), "sample_rate": int(sample_rate)}
