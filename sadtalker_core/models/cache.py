"""The one process-wide cache of loaded networks, which a host can drive.

Every network of every stage (the SadTalker networks, the face detectors, the restorers) is
built once per key through :data:`MODELS` and handed out from there. A host integration drives
the same cache: it lists the entries with their bytes, moves them to the offload device when a
diffusion model needs the memory, evicts them, and subscribes to events to mirror them in its
own memory manager.

Stage objects hold :class:`ModelRef` handles, not modules: calling a handle returns the module
on its home device (moved back if the host offloaded it, rebuilt if it was evicted), so an
offload or an eviction between two calls never breaks a stage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

Event = str  # "loaded" | "offloaded" | "restored" | "evicted"
Listener = Callable[[Event, "CachedModel"], None]


def _modules_of(obj: Any) -> list[nn.Module]:
    """The torch modules an entry holds: itself, or what its ``nn_modules()`` lists."""
    if isinstance(obj, nn.Module):
        return [obj]
    nn_modules = getattr(obj, "nn_modules", None)
    return list(nn_modules()) if callable(nn_modules) else []


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    for m in _modules_of(obj):
        yield from m.parameters()
        yield from m.buffers()


@dataclass(eq=False)
class CachedModel:
    """One cache entry.

    Attributes:
        key: the cache key (network, file identity, device, dtype, ...).
        name: what it is, for people (``"generator (SadTalker_V0.0.2_256.safetensors)"``).
        value: the network (an ``nn.Module``) or an object holding some (``nn_modules()``).
        device: the home device: where the entry runs when it is used.
        path: the file it was loaded from, if any.
        last_used: ``time.monotonic()`` of the last hand-out.
    """

    key: Hashable
    name: str
    value: Any
    device: torch.device
    path: Path | None = None
    last_used: float = field(default_factory=time.monotonic)

    @property
    def modules(self) -> list[nn.Module]:
        return _modules_of(self.value)

    @property
    def current_device(self) -> torch.device:
        """Where the weights are now (the home device, or the offload device)."""
        for t in _tensors(self.value):
            return t.device
        return self.device

    @property
    def offloaded(self) -> bool:
        """True when any weight is off the home device (a host moved some or all of them)."""
        return any(not _same(t.device, self.device) for t in _tensors(self.value))

    @property
    def nbytes(self) -> int:
        """Bytes of the weights (parameters and buffers)."""
        return sum(t.numel() * t.element_size() for t in _tensors(self.value))

    def move_to(self, device: torch.device) -> None:
        """Move the weights (in place: every holder of the module sees the move)."""
        for m in self.modules:
            m.to(device)


class ModelCache:
    """Networks built once per key, on a home device, movable to an offload device.

    Thread-safe: two threads asking for the same key get one instance (the second waits for the
    first build); different keys build in parallel.

    Args:
        offload_device: where :meth:`offload` moves weights (the CPU).
    """

    def __init__(self, offload_device: str | torch.device = "cpu"):
        self.offload_device = torch.device(offload_device)
        self._entries: dict[Hashable, CachedModel] = {}
        self._lock = threading.RLock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._listeners: list[Listener] = []

    # ----------------------------------------------------------------------------------------
    # loading

    def get(
        self,
        key: Hashable,
        build: Callable[[], Any],
        device: str | torch.device,
        name: str = "",
        path: str | Path | None = None,
    ) -> Any:
        """The entry ``key`` on its home device, built with ``build()`` the first time.

        ``build`` returns the network already on ``device`` (or the CPU: it is moved). An entry
        the host offloaded is moved back to ``device`` first.
        """
        device = torch.device(device)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                key_lock = self._key_locks.setdefault(key, threading.Lock())
        if entry is not None:
            return self._use(entry)
        with key_lock:
            with self._lock:
                entry = self._entries.get(key)
            if entry is not None:  # built by another thread while we waited
                return self._use(entry)
            value = build()
            entry = CachedModel(key, name or str(key), value, device, Path(path) if path else None)
            if entry.modules and entry.current_device != device:
                entry.move_to(device)
            with self._lock:
                self._entries[key] = entry
                self._key_locks.pop(key, None)
            log.debug("cached %s on %s (%.1f MB)", entry.name, device, entry.nbytes / 1e6)
            self._emit("loaded", entry)
            return entry.value

    def _use(self, entry: CachedModel) -> Any:
        entry.last_used = time.monotonic()
        if entry.modules and entry.offloaded:
            entry.move_to(entry.device)
            self._emit("restored", entry)
        return entry.value

    def ref(
        self,
        key: Hashable,
        build: Callable[[], Any],
        device: str | torch.device,
        name: str = "",
        path: str | Path | None = None,
    ) -> ModelRef:
        """A handle that returns the entry on every call (building it now, once)."""
        handle = ModelRef(self, key, build, torch.device(device), name, path)
        handle()
        return handle

    # ----------------------------------------------------------------------------------------
    # what a host drives

    def entries(self, match: Callable[[CachedModel], bool] | None = None) -> list[CachedModel]:
        with self._lock:
            items = list(self._entries.values())
        return [e for e in items if match is None or match(e)]

    def entry(self, key: Hashable) -> CachedModel | None:
        with self._lock:
            return self._entries.get(key)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def offload(self, keys: Iterable[Hashable] | None = None) -> int:
        """Move entries (all, or ``keys``) to the offload device; returns the bytes moved off
        their home devices. The next use moves them back."""
        moved = 0
        for entry in self._select(keys):
            if entry.modules and entry.current_device != self.offload_device:
                moved += entry.nbytes
                entry.move_to(self.offload_device)
                self._emit("offloaded", entry)
        return moved

    def load(self, keys: Iterable[Hashable] | None = None) -> None:
        """Move entries (all, or ``keys``) back to their home devices now."""
        for entry in self._select(keys):
            self._use(entry)

    def evict(self, keys: Iterable[Hashable] | None = None) -> int:
        """Forget entries (all, or ``keys``); returns their bytes. The memory is freed once no
        caller holds the module any more (stage objects hold :class:`ModelRef` handles only)."""
        with self._lock:
            chosen = self._select(keys)
            for entry in chosen:
                self._entries.pop(entry.key, None)
        for entry in chosen:
            self._emit("evicted", entry)
        return sum(e.nbytes for e in chosen)

    def clear(self) -> None:
        self.evict()

    def nbytes(self, device: str | torch.device | None = None) -> int:
        """Bytes held by the entries (on ``device`` only, when given)."""
        want = None if device is None else torch.device(device)
        return sum(
            e.nbytes for e in self.entries() if want is None or _same(e.current_device, want)
        )

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event, entry)`` on "loaded", "offloaded", "restored", "evicted";
        returns the function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # ----------------------------------------------------------------------------------------

    def _select(self, keys: Iterable[Hashable] | None) -> list[CachedModel]:
        with self._lock:
            if keys is None:
                return list(self._entries.values())
            return [self._entries[k] for k in keys if k in self._entries]

    def _emit(self, event: Event, entry: CachedModel) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event, entry)
            except Exception:  # a host's listener must not break a render
                log.exception("model cache listener failed on %s %s", event, entry.name)


def _same(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index is None or b.index is None or a.index == b.index


@dataclass(frozen=True, eq=False)
class ModelRef:
    """A handle on one cache entry: ``ref()`` is the module, on its home device."""

    cache: ModelCache
    key: Hashable
    build: Callable[[], Any]
    device: torch.device
    name: str = ""
    path: str | Path | None = None

    def __call__(self) -> Any:
        return self.cache.get(self.key, self.build, self.device, self.name, self.path)


MODELS = ModelCache()
"""The process-wide cache every stage loads through."""
