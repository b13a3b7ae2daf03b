"""The only module that imports AUTOMATIC1111 / Forge (``modules.*``): settings, folders, the GPU
queue lock, progress and interrupt (``shared.state``), the diffusion model's memory, the pickle
checker. Every host import is guarded: a missing or renamed host module degrades one feature and
is logged, it never stops the tab from loading.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SECTION = ("sadtalker", "SadTalker")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_local_lock = threading.Lock()

# Settings of the HTTP API (api.py). Like A1111's own api_enable_requests, they are
# ``restrict_api``: ``POST /sdapi/v1/options`` cannot change them, only the Settings page can.
API_ALLOW_PATHS = "sadtalker_api_allow_paths"
API_PATH_FOLDERS = "sadtalker_api_path_folders"
API_MAX_REQUEST_MB = "sadtalker_api_max_request_mb"
API_MAX_SECONDS = "sadtalker_api_max_seconds"
# 50 MB of decoded files: a photo plus ~4 min of 16-bit 48 kHz stereo WAV (far more as MP3)
API_DEFAULT_MAX_REQUEST_MB = 50
# 10 min of speech (or reference video, or idle motion) = 15000 frames at 25 fps: over an hour
# of rendering on a mid-range GPU already
API_DEFAULT_MAX_SECONDS = 600


def module(name: str):
    """The host module ``name``, or None outside A1111/Forge (or when the host renamed it)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def opt(key: str, default: Any = None) -> Any:
    """A setting (``shared.opts.<key>``); ``default`` when unset, empty, or outside a host."""
    shared = module("modules.shared")
    value = getattr(getattr(shared, "opts", None), key, None)
    return default if value in (None, "") else value


class _State:
    """``shared.state`` stand-in used outside a host (the fields the tab reads and writes)."""

    interrupted = False
    job_count = 0
    sampling_step = 0
    sampling_steps = 0
    textinfo = None

    def begin(self, job: str = "(unknown)") -> None:
        self.interrupted, self.sampling_step, self.job_count = False, 0, -1

    def end(self) -> None:
        self.job_count = 0

    def interrupt(self) -> None:
        self.interrupted = True


_fallback_state = _State()


def state():
    """The host's ``shared.state`` (progress bar, Interrupt button), else a local one."""
    return getattr(module("modules.shared"), "state", None) or _fallback_state


def queue_lock():
    """The lock every GPU job of the host takes (``call_queue.queue_lock``), else a local one."""
    return getattr(module("modules.call_queue"), "queue_lock", None) or _local_lock


def gpu_call(fn: Callable, extra_outputs: list | None = None) -> Callable:
    """``fn`` wrapped like the host's own Generate buttons: queue lock, ``state.begin/end``,
    errors as an error div, timing HTML appended to the last output (so that must be HTML)."""
    wrap = getattr(module("modules.call_queue"), "wrap_gradio_gpu_call", None)
    if wrap is not None:
        return wrap(fn, extra_outputs=extra_outputs)

    def locked(*args, **kwargs):
        with job("sadtalker"):
            return fn(*args, **kwargs)

    return locked


@contextlib.contextmanager
def job(name: str) -> Iterator[Any]:
    """Hold the host's queue lock with ``state.begin/end`` around a job (the HTTP API's route).

    Yields the host state. The stop flags are cleared before the job (an Interrupt that came
    while no job ran, or one meant for the job before, does not stop this one; A1111's and
    Forge's ``begin`` clear them too) and afterwards, as the host's own wrapper does.
    """
    with queue_lock():
        st = state()
        _clear_stop_flags(st)
        st.begin(job=name)
        try:
            yield st
        finally:
            st.end()
            _clear_stop_flags(st)


def _clear_stop_flags(st) -> None:
    """Reset Interrupt / Skip / Stop-generating (``shared.state``) for the next job."""
    st.interrupted = False
    for flag in ("skipped", "stopping_generation"):
        if hasattr(st, flag):
            setattr(st, flag, False)


def is_interrupted() -> bool:
    st = state()
    return bool(getattr(st, "interrupted", False) or getattr(st, "stopping_generation", False))


def interrupt() -> None:
    """What the host's Interrupt button does."""
    st = state()
    if hasattr(st, "interrupt"):
        st.interrupt()
    else:
        st.interrupted = True


def api_path_folders() -> list[str]:
    """Folders whose files API requests may name, as written in the setting (one per line or
    separated by ``;``); [] while the setting "accept server paths" is off (the default)."""
    allowed = opt(API_ALLOW_PATHS, False)
    if not (allowed is True or str(allowed).strip().lower() in ("1", "true", "yes", "on")):
        return []
    return [f.strip() for f in re.split(r"[\r\n;]", str(opt(API_PATH_FOLDERS, ""))) if f.strip()]


def api_limit(key: str, default: float) -> float | None:
    """A numeric API limit setting; None (no limit) when set to 0 or less."""
    value = opt(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        log.warning("SadTalker: setting %s=%r is not a number, using %s", key, value, default)
        number = float(default)
    return number if number > 0 else None


def models_path() -> Path:
    paths = module("modules.paths") or module("modules.paths_internal")
    return Path(getattr(paths, "models_path", None) or Path.cwd() / "models")


def output_root() -> Path:
    """The host's outputs folder (``<data dir>/outputs``)."""
    internal = module("modules.paths_internal")
    if getattr(internal, "default_output_dir", None):
        return Path(internal.default_output_dir)
    data = getattr(internal, "data_path", None) or getattr(
        module("modules.paths"), "data_path", None
    )
    return Path(data or Path.cwd()) / "outputs"


def weights_dir() -> Path:
    """Setting ``sadtalker_weights_dir``, default ``<models_path>/SadTalker``."""
    return Path(opt("sadtalker_weights_dir") or models_path() / "SadTalker").expanduser()


def results_dir(day: datetime.date | None = None) -> Path:
    """``<setting sadtalker_results_dir or outputs/sadtalker>/<YYYY-MM-DD>``."""
    root = Path(opt("sadtalker_results_dir") or output_root() / "sadtalker").expanduser()
    return root / (day or datetime.date.today()).isoformat()


def device():
    """The host's torch device (``modules.devices.device``; honours ``--use-cpu``), else None."""
    return getattr(module("modules.devices"), "device", None)


def last_generated_image(tab: str) -> Path | None:
    """The newest picture the host saved from ``tab`` (txt2img / img2img), or None."""
    default = output_root() / f"{tab}-images"
    folder = Path(opt(f"outdir_{tab}_samples") or opt("outdir_samples") or default)
    if not folder.is_dir():
        return None
    newest, newest_time = None, -1.0
    for p in folder.rglob("*"):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            t = p.stat().st_mtime
            if t > newest_time:
                newest, newest_time = p, t
    return newest


_loader_lock = threading.Lock()
_loader_users = 0
_host_load = None


@contextlib.contextmanager
def torch_own_loader() -> Iterator[None]:
    """Let ``torch.load(..., weights_only=True)`` reach torch's own loader inside the block.

    A1111 replaces ``torch.load`` with ``modules.safe.load``, which ignores ``weights_only`` and
    returns None for a file its checker refuses ("the file may be malicious"). The core always
    loads with ``weights_only=True`` (torch's restricted unpickler), so those calls go to torch;
    every other call, from any thread, still goes through the host's checker. Re-entrant and
    thread-safe; the host's function is put back when the last user leaves.
    """
    global _loader_users, _host_load
    own = getattr(module("modules.safe"), "unsafe_torch_load", None)
    import torch

    if own is None:
        yield
        return
    with _loader_lock:
        if _loader_users == 0 and torch.load is not own:
            _host_load = torch.load

            def load(*args, **kwargs):
                if kwargs.get("weights_only") is True or _host_load is None:
                    return own(*args, **kwargs)
                return _host_load(*args, **kwargs)

            torch.load = load
        _loader_users += 1
    try:
        yield
    finally:
        with _loader_lock:
            _loader_users -= 1
            if _loader_users == 0 and _host_load is not None:
                torch.load, _host_load = _host_load, None


def free_device_memory(dev) -> int | None:
    """Free bytes on a CUDA device, None elsewhere."""
    import torch

    if dev is None or torch.device(dev).type != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(dev))
    return int(free)


def make_room(dev, need: int) -> Callable[[], None] | None:
    """Ask the host to move its diffusion model off the GPU when less than ``need`` bytes are free.

    Returns a function that gives the memory back (None when nothing was moved). Forge: its
    memory manager (``backend.memory_management``) reloads on demand, nothing to give back.
    A1111: ``sd_models.unload_model_weights`` moves the model to the CPU (lowvram aware);
    ``send_model_to_device`` brings it back.
    """
    free = free_device_memory(dev)
    if free is None or free >= need:
        return None
    import torch

    forge = module("backend.memory_management")
    if forge is not None and hasattr(forge, "free_memory"):
        log.info("SadTalker: %.1f GB free, asking Forge to free %.1f GB", free / 1e9, need / 1e9)
        forge.free_memory(need, torch.device(dev))
        return None
    sd_models, shared = module("modules.sd_models"), module("modules.shared")
    model = getattr(shared, "sd_model", None)
    if sd_models is None or model is None or not hasattr(sd_models, "unload_model_weights"):
        log.warning("SadTalker: %.1f GB free on the GPU and the host offers no offload", free / 1e9)
        return None
    log.info("SadTalker: %.1f GB free, moving the diffusion model to the CPU", free / 1e9)
    sd_models.unload_model_weights(model)
    torch.cuda.empty_cache()

    def give_back() -> None:
        if hasattr(sd_models, "send_model_to_device"):
            sd_models.send_model_to_device(model)

    return give_back


def add_settings() -> None:
    """The settings section (``on_ui_settings``)."""
    shared = module("modules.shared")
    option_info = getattr(shared, "OptionInfo", None) or getattr(
        module("modules.options"), "OptionInfo", None
    )
    if shared is None or option_info is None:
        log.warning("SadTalker: the host has no shared.opts/OptionInfo; settings are not shown")
        return
    gr = importlib.import_module("gradio")
    from .options import BY_NAME

    items = {
        "sadtalker_weights_dir": option_info(
            "",
            f"Weights folder (empty: {models_path() / 'SadTalker'}; ComfyUI can share it "
            "through extra_model_paths.yaml)",
        ),
        "sadtalker_results_dir": option_info(
            "", f"Results folder (empty: {output_root() / 'sadtalker'}); a dated subfolder per day"
        ),
        "sadtalker_detector": option_info(
            BY_NAME["detector"].default,
            "Default face detector",
            gr.Dropdown,
            {"choices": list(BY_NAME["detector"].choices)},
        ),
        "sadtalker_precision": option_info(
            BY_NAME["precision"].default,
            "Default precision",
            gr.Dropdown,
            {"choices": list(BY_NAME["precision"].choices)},
        ),
        "sadtalker_keep_loaded": option_info(
            True, "Keep the SadTalker models loaded between clicks (off: release them after each)"
        ),
        API_ALLOW_PATHS: option_info(
            False,
            "API: accept file paths on this server in /sadtalker/v1/generate (source_image, "
            "driven_audio, ref_pose, ref_eyeblink), only inside the folders below; off: base64 "
            "and data URLs only",
        ),
        API_PATH_FOLDERS: option_info(
            "",
            "API: folders whose files requests may name (one per line or separated by ;, "
            "sub-folders included; symlinks leading out of them are refused)",
            gr.Textbox,
            {"lines": 3},
        ),
        API_MAX_REQUEST_MB: option_info(
            API_DEFAULT_MAX_REQUEST_MB,
            "API: largest request, in MB of decoded files (0: no limit)",
            gr.Number,
            {"precision": 0},
        ),
        API_MAX_SECONDS: option_info(
            API_DEFAULT_MAX_SECONDS,
            "API: longest driven audio, reference video or idle motion, in seconds (0: no limit)",
            gr.Number,
            {"precision": 0},
        ),
    }
    # Settings that decide which files are read or written: the Settings page only (A1111's
    # /sdapi/v1/options refuses restrict_api options, as for its own api_enable_requests).
    restricted = {"sadtalker_weights_dir", "sadtalker_results_dir"}
    restricted |= {API_ALLOW_PATHS, API_PATH_FOLDERS, API_MAX_REQUEST_MB, API_MAX_SECONDS}
    for key, info in items.items():
        info.section = SECTION
        if key in restricted:
            info.restrict_api = True  # an attribute since A1111 1.6; older hosts ignore it
        shared.opts.add_option(key, info)
