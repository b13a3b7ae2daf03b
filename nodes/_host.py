"""The pack's only ComfyUI adapter: model folders and downloads, device and memory (our networks
under ComfyUI's memory manager), progress/previews/Cancel, IMAGE/AUDIO/VIDEO <-> core."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import comfy.model_management
import comfy.model_patcher
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy_api.latest import ComfyExtension, io, ui  # noqa: F401  (the nodes' V3 schema)
from PIL import Image

from ..sadtalker_core.enhance.upscale import BackgroundUpscaler
from ..sadtalker_core.io.frames import pad_to_even as even_frames
from ..sadtalker_core.models import FILES, MODELS, CachedModel, find_file
from ..sadtalker_core.models.download import download_weights

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
    """Have ComfyUI unload models (its own, and ours not needed now) from ``device`` until
    ``bytes_needed`` are free there, so a SadTalker stage does not run out of memory."""
    if device.type != "cpu":
        comfy.model_management.free_memory(bytes_needed, device)


# --------------------------------------------------------------------------------------------
# Our networks under ComfyUI's memory manager


class SadTalkerNetworks(torch.nn.ModuleList):
    """Holder of one model-cache entry's networks: what a ModelPatcher wraps, so ComfyUI's
    bookkeeping attributes (``device``, ``model_loaded_weight_memory`` ...) land here."""


class _Patcher(comfy.model_patcher.ModelPatcher):
    """All-or-nothing ModelPatcher: our layers are plain torch modules (not ``comfy.ops``), so a
    partial load or unload would leave a network split between two devices."""

    def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
        return super().partially_load(device_to, 1e32, force_patch_weights=force_patch_weights)

    def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False):
        return 0  # ComfyUI then unloads the whole holder (detach -> .to(offload device))


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index is None or b.index is None or a.index == b.index


class ComfyMemory:
    """Mirrors the core's model cache (``MODELS``) in ComfyUI's memory manager.

    Each cache entry whose home is ComfyUI's device gets one :class:`_Patcher` (load device =
    ComfyUI's device, offload device = ``unet_offload_device()``). ComfyUI keeps only weak
    references, so the patchers live here until the core evicts their entry. Moving a network
    in place is always safe: the core moves an offloaded network back on its next use.
    """

    def __init__(self) -> None:
        self._patchers: dict = {}
        self._lock = threading.Lock()
        MODELS.subscribe(self._on_event)

    def _on_event(self, event: str, entry: CachedModel) -> None:
        if event == "evicted":
            with self._lock:
                self._patchers.pop(entry.key, None)

    def patchers(self, device: torch.device) -> list:
        """One patcher per cache entry living on ``device`` (created on first sight)."""
        out = []
        for entry in MODELS.entries(lambda e: _same_device(e.device, device)):
            modules = entry.modules
            if not modules:
                continue
            with self._lock:
                patcher = self._patchers.get(entry.key)
                if patcher is None or [id(m) for m in patcher.model] != [id(m) for m in modules]:
                    patcher = _Patcher(
                        SadTalkerNetworks(modules),
                        load_device=device,
                        offload_device=comfy.model_management.unet_offload_device(),
                    )
                    self._patchers[entry.key] = patcher
            out.append(patcher)
        return out

    def load(self, device: torch.device, memory_required: int = 0) -> None:
        """Make room for a stage (``memory_required`` activation bytes) and have ComfyUI load
        every SadTalker network of ``device`` fully (unloading its own models if needed)."""
        make_room(int(memory_required), device)
        patchers = self.patchers(device)
        if patchers:
            comfy.model_management.load_models_gpu(
                patchers, memory_required=int(memory_required), force_full_load=True
            )

    def register(self, device: torch.device) -> None:
        """Hand networks a stage has just built (already on ``device``) to ComfyUI, so "Unload
        Models" and later diffusion models can offload them."""
        loaded = {id(p) for p in comfy.model_management.loaded_models()}
        new = [p for p in self.patchers(device) if id(p) not in loaded]
        if new:
            comfy.model_management.load_models_gpu(new, force_full_load=True)

    @contextlib.contextmanager
    def stage(self, device: torch.device, memory_required: int = 0) -> Iterator[None]:
        """``with MEMORY.stage(device, bytes):`` around each stage's work."""
        self.load(device, memory_required)
        try:
            yield
        finally:
            self.register(device)


MEMORY = ComfyMemory()


@contextlib.contextmanager
def upscale_model_on(model, device: torch.device, memory_required: int = 0) -> Iterator[object]:
    """A ComfyUI UPSCALE_MODEL (spandrel descriptor) ready on ComfyUI's device, as the core
    background upscaler, for the duration of the block.

    Today's ComfyUI gives the model a ``.patcher``: it is loaded through ComfyUI's memory manager
    (``load_models_gpu``, as core Upscale Image does), so ComfyUI knows where it is and core nodes
    using the same model afterwards find it consistent. The oldest hosts have no patcher: the
    model is moved to the device and back to the CPU afterwards, as their Upscale Image did.
    """
    if model is None:
        yield None
        return
    patcher = getattr(model, "patcher", None)
    if patcher is not None:
        comfy.model_management.load_models_gpu(
            [patcher], memory_required=int(memory_required), force_full_load=True
        )
        yield BackgroundUpscaler(model)  # used where ComfyUI put it
        return
    make_room(int(memory_required), device)
    try:
        yield BackgroundUpscaler(model, device)
    finally:
        model.to("cpu")


def release_cache() -> None:
    """Return cached, unused device memory (cuDNN workspaces, freed activations) to the host."""
    comfy.model_management.soft_empty_cache()


PREVIEW_SIZE = 512  # px, longest side of the live preview frame
PREVIEW_EVERY = 4  # batches between two live preview frames


class ProgressCallback:
    """Core ``progress(done, total)`` callback driving a ComfyUI progress bar, and the core's
    per-batch hook (``on_batch``) showing live preview frames in the node.

    The bar is created on the first call, when the total is known. Each update goes through
    ComfyUI's progress hook, which raises ``InterruptProcessingException`` when the user cancels.
    """

    def __init__(self, every: int = PREVIEW_EVERY) -> None:
        self._bar: comfy.utils.ProgressBar | None = None
        self.every = every
        self._batches = 0
        self.previews: list[int] = []  # frames_done of each preview sent (for tests and logs)

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = comfy.utils.ProgressBar(total)
        self._bar.update_absolute(done, total)

    def on_batch(self, frames: np.ndarray, done: int, total: int) -> None:
        """After each finished (B, H, W, 3) uint8 batch: its last frame in the node (JPEG, at
        most ``PREVIEW_SIZE`` px) for the first batch at once, then every ``every`` batches, and
        for the last batch at the end."""
        self._batches += 1
        if len(frames) == 0:
            return
        if (self._batches - 1) % self.every and done < total:
            return
        if self._bar is None:
            self._bar = comfy.utils.ProgressBar(total)
        picture = Image.fromarray(np.ascontiguousarray(frames[-1]))
        self._bar.update_absolute(done, total, ("JPEG", picture, PREVIEW_SIZE))
        self.previews.append(done)


def check_interrupted() -> bool:
    """``should_cancel`` for core loops: raises ComfyUI's own ``InterruptProcessingException``
    when the user pressed Cancel (so ComfyUI reports an interruption, not an error)."""
    comfy.model_management.throw_exception_if_processing_interrupted()
    return False


def first_image(images: torch.Tensor) -> np.ndarray:
    """The first picture of a ComfyUI IMAGE batch as (H, W, 3) uint8 RGB."""
    return image_to_uint8(images[:1])[0]


def audio_from_comfy(audio: dict) -> tuple[np.ndarray, int]:
    """ComfyUI AUDIO ``{"waveform": (B, C, N), "sample_rate"}`` -> ((C, N) float32, rate) of
    the first clip, as the core's ``load_audio`` takes it."""
    wave = audio["waveform"]
    if wave.dim() == 3:
        wave = wave[0]
    samples = np.ascontiguousarray(wave.detach().float().cpu().numpy())
    if samples.ndim == 2 and samples.shape[0] == 1:
        samples = samples[0]
    return samples, int(audio["sample_rate"])


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
            batch = even_frames(batch)
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


# --------------------------------------------------------------------------------------------
# VIDEO


def output_video_path(filename_prefix: str) -> tuple[Path, str, str]:
    """The next free ``<prefix>_00001_.mp4`` in ComfyUI's output folder (SaveVideo's naming).

    Returns:
        (absolute path, file name, subfolder relative to the output folder).
    """
    out_dir = folder_paths.get_output_directory()
    full_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        filename_prefix, out_dir
    )
    while True:  # a cancelled or parallel run may have taken the counter's name meanwhile
        file = f"{name}_{counter:05}_.mp4"
        path = Path(full_dir) / file
        if not path.exists():
            return path, file, subfolder
        counter += 1


def video_from_file(path: os.PathLike):
    """The core VIDEO type, backed by the file (nothing held in memory)."""
    from comfy_api.latest import InputImpl

    return InputImpl.VideoFromFile(str(path))


def video_ui(file: str, subfolder: str) -> dict:
    """The node preview core SaveVideo shows: the file in the output folder, animated."""
    return {
        "images": [{"filename": file, "subfolder": subfolder, "type": "output"}],
        "animated": (True,),
    }


def _trimmed(video) -> bool:
    """Whether a core VIDEO carries a trim window (Trim Video / Video Slice keep the file and
    add one; hosts before the trim window have no such method)."""
    window = getattr(video, "get_active_trim_window", None)
    return window is not None and any(window())


@contextlib.contextmanager
def video_path(video) -> Iterator[str]:
    """A file path holding exactly the frames of a core VIDEO: its own file when it is an
    untrimmed file; else (a trim window, frames in memory, a byte stream) a temporary MP4 written
    by the VIDEO itself with ``save_to`` (which applies the trim), deleted afterwards."""
    source = video.get_stream_source()
    if isinstance(source, (str, os.PathLike)) and os.path.isfile(source) and not _trimmed(video):
        yield str(source)
        return
    fd, tmp = tempfile.mkstemp(
        suffix=".mp4", prefix="sadtalker_ref_", dir=folder_paths.get_temp_directory()
    )
    os.close(fd)
    try:
        video.save_to(tmp)
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


# --------------------------------------------------------------------------------------------
# Downloads

ENV_URL_BASE = "SADTALKER_DOWNLOAD_URL_BASE"  # a mirror serving the official files by name


def download_dir() -> Path:
    """Where Load Models' auto_download puts files: ComfyUI's models/sadtalker."""
    return Path(folder_paths.get_folder_paths(MODEL_FOLDER)[0])


def missing_files(names: Sequence[str], dirs: Sequence[str]) -> list[str]:
    """The official files of ``names`` found in none of ``dirs``."""
    paths = [Path(d) for d in dirs]
    return [n for n in names if find_file(n, paths) is None]


def download(names: Sequence[str]) -> list[Path]:
    """Fetch ``names`` into :func:`download_dir` with a ComfyUI progress bar (bytes of all files
    together, in MB); atomic and validated by the core. ``SADTALKER_DOWNLOAD_URL_BASE`` (a
    mirror) replaces the official URLs' folders.

    Raises:
        DownloadError: offline or a server error, naming each file, URL and the folder.
    """
    sizes = {n: FILES[n].size_mb * 1_000_000 for n in names}
    total_mb = max(1, int(sum(sizes.values()) / 1e6))
    bar = comfy.utils.ProgressBar(total_mb)
    order = list(names)

    def progress(name: str, done: int, total: int) -> None:
        finished = sum(sizes[n] for n in order[: order.index(name)])
        bar.update_absolute(min(total_mb, int((finished + done) / 1e6)), total_mb)

    base = os.environ.get(ENV_URL_BASE) or None
    return download_weights(download_dir(), names, progress=progress, url_base=base)
