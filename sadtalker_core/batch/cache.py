"""Avatar cache: one face extraction (detection, crop, 3DMM) per picture and options, reused by
every clip of a batch: in this process (LRU), on disk (``--face_cache DIR``) and, on Ray, across
workers through the object store (:class:`SharedFaces`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from ..config import ExtractConfig
from ..types import Face

log = logging.getLogger(__name__)

EXTRACTED, MEMORY, DISK, SHARED = "extracted", "memory", "disk", "shared"


def face_key(image: str | os.PathLike, config: ExtractConfig) -> str:
    """SHA-256 of the picture's bytes and of every extract option (hex): the same photo under
    another name hits, the same name with other bytes or options does not."""
    h = hashlib.sha256()
    with open(image, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(json.dumps(asdict(config), sort_keys=True).encode())
    return h.hexdigest()


class SharedFaces(Protocol):
    """A cache tier shared by several processes (the Ray object store).

    ``fetch(key)`` returns the Face when another worker published it, waiting while one is
    extracting it, or None when the caller should extract it (it then calls ``publish`` or, on
    failure, ``abandon``)."""

    def fetch(self, key: str) -> Face | None: ...

    def publish(self, key: str, face: Face) -> None: ...

    def abandon(self, key: str) -> None: ...


class FaceCache:
    """Faces by :func:`face_key`, looked up in memory, then on disk, then in the shared tier.

    Args:
        folder: on-disk tier (``<key>.npz``, written atomically); None: none.
        capacity: faces kept in memory (least recently used dropped first).
        shared: a tier shared with other processes; None: none.
        enabled: False: always extract (for measuring).

    ``counts`` tells where the faces came from (``extracted``, ``memory``, ``disk``, ``shared``).
    Threads asking for the same key wait for one extraction.
    """

    def __init__(
        self,
        folder: str | os.PathLike | None = None,
        capacity: int = 64,
        shared: SharedFaces | None = None,
        enabled: bool = True,
    ):
        self.folder = Path(folder) if folder is not None else None
        self.capacity, self.shared, self.enabled = capacity, shared, enabled
        self.counts: Counter[str] = Counter()
        self._faces: OrderedDict[str, Face] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    def get(
        self, image: str | os.PathLike, config: ExtractConfig, extract: Callable[[], Face]
    ) -> tuple[Face, str]:
        """The Face of ``image`` under ``config`` and where it came from; ``extract()`` makes it
        on a miss (its errors propagate; nothing is cached then)."""
        if not self.enabled:
            self.counts[EXTRACTED] += 1
            return extract(), EXTRACTED
        key = face_key(image, config)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            face, source = self._lookup(key)
            if face is None:
                try:
                    face, source = extract(), EXTRACTED
                except BaseException:
                    if self.shared is not None:
                        self.shared.abandon(key)
                    raise
                self._store_disk(key, face)
            if self.shared is not None and source in (EXTRACTED, DISK):
                self._publish(key, face)
            self._remember(key, face)
        self.counts[source] += 1
        return face, source

    def _lookup(self, key: str) -> tuple[Face | None, str]:
        with self._lock:
            face = self._faces.get(key)
            if face is not None:
                self._faces.move_to_end(key)
                return face, MEMORY
        if self.folder is not None and (self.folder / f"{key}.npz").is_file():
            try:
                return Face.load(self.folder / f"{key}.npz"), DISK
            except Exception as e:  # a damaged cache file is made again, not fatal
                log.warning("face cache file %s unreadable (%s): extracting again", key, e)
        if self.shared is not None:
            face = self.shared.fetch(key)
            if face is not None:
                self._store_disk(key, face)
                return face, SHARED
        return None, ""

    def _publish(self, key: str, face: Face) -> None:
        assert self.shared is not None
        try:
            self.shared.publish(key, face)
        except Exception as e:  # the clip goes on with its face; the others extract their own
            log.warning("could not share the face %s with the other workers: %s", key[:12], e)
            self.shared.abandon(key)

    def _store_disk(self, key: str, face: Face) -> None:
        if self.folder is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            face.save(self.folder / f"{key}.npz")  # atomic: temp file + rename
        except OSError as e:
            log.warning("could not write the face cache %s: %s", self.folder, e)

    def _remember(self, key: str, face: Face) -> None:
        with self._lock:
            self._faces[key] = face
            self._faces.move_to_end(key)
            while len(self._faces) > self.capacity:
                self._faces.popitem(last=False)
