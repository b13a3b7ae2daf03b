"""Where checkpoint files are: the folders searched, in order, and the file of each network."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..config import SIZES
from ..errors import ModelNotFoundError
from .registry import FILES, LEGACY_SET, mapping_file_for

ENV_CHECKPOINTS = "SADTALKER_CHECKPOINTS"
# Folders searched last instead of the pack's checkpoints/ (and, for a command run from a pack
# inside a host, the host's model folder): the tests point it at an empty folder so that the
# weights a user put in the checkout never reach them.
ENV_DEFAULT_CHECKPOINTS = "SADTALKER_DEFAULT_CHECKPOINTS"
PACK_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"  # the official layout


def fallback_checkpoint_dirs() -> list[Path]:
    """The folders searched last: the pack's ``checkpoints/``, or those of
    ``SADTALKER_DEFAULT_CHECKPOINTS`` when it is set (``os.pathsep``-separated)."""
    env = os.environ.get(ENV_DEFAULT_CHECKPOINTS)
    if env is not None:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [PACK_CHECKPOINTS]


def default_checkpoint_dirs(
    explicit: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
) -> list[Path]:
    """Folders searched for checkpoints, in order.

    1. ``explicit`` (a folder or a list of folders given by the caller: CLI flag, node, tab);
    2. the ``SADTALKER_CHECKPOINTS`` environment variable (``os.pathsep``-separated);
    3. ``checkpoints/`` inside the pack (where the official scripts put them), or the folders
       of ``SADTALKER_DEFAULT_CHECKPOINTS`` (:func:`fallback_checkpoint_dirs`).
    Each folder is listed once (relative paths made absolute; the same folder reached through
    another spelling or a link is dropped). A host's model folders come in through ``explicit``
    (its adapter knows them).
    Each folder's ``gfpgan/weights`` sub-folder is searched too (official enhancer layout).
    """
    dirs: list[Path] = []
    if explicit:
        items = [explicit] if isinstance(explicit, (str, os.PathLike)) else list(explicit)
        dirs += [Path(p).expanduser() for p in items]
    env = os.environ.get(ENV_CHECKPOINTS)
    if env:
        dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    dirs += fallback_checkpoint_dirs()
    seen: set[str] = set()
    unique = []
    for d in dirs:
        d = d.absolute()  # messages name the folder wherever the command ran
        key = os.path.realpath(d)  # "checkpoints" and the pack's checkpoints/ are one folder
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _candidates(name: str, dirs: Iterable[Path]) -> Iterable[Path]:
    for d in dirs:
        yield d / name
        yield d / "gfpgan" / "weights" / name


def find_file(name: str, dirs: Sequence[Path]) -> Path | None:
    """First existing path of official file ``name`` in ``dirs`` (or their gfpgan/weights)."""
    for p in _candidates(name, dirs):
        if p.is_file():
            return p
    return None


def require_file(name: str, dirs: Sequence[Path]) -> Path:
    path = find_file(name, dirs)
    if path is None:
        spec = FILES.get(name)
        hint = ""
        if spec is not None:
            where = dirs[0] if dirs else Path("models/sadtalker")
            hint = f"{spec.download_hint} and put it in {where} (or set {ENV_CHECKPOINTS})."
        raise ModelNotFoundError(name, list(dirs), hint)
    return path


def network_file(
    network: str, dirs: Sequence[Path], size: int = 256, preprocess: str = "crop"
) -> Path:
    """The file to load ``network`` from: the combined safetensors of ``size``, else the old split file.

    MappingNet comes from ``mapping_file_for(preprocess)``. The networks that do not depend on the
    render size (audio, 3DMM) are taken from whichever combined file is present.

    Raises:
        ModelNotFoundError: no file holding the network was found; names what to download.
    """
    if network == "mapping":
        return require_file(mapping_file_for(preprocess), dirs)
    size_free = network in ("audio2exp", "audio2pose", "face_3drecon")
    sizes = [size] + ([s for s in SIZES if s != size] if size_free else [])
    for s in sizes:
        found = find_file(f"SadTalker_V0.0.2_{s}.safetensors", dirs)
        if found is not None:
            return found
    if size == 256 or size_free:
        for legacy in LEGACY_SET:
            if network in FILES[legacy].sections:
                found = find_file(legacy, dirs)
                if found is not None:
                    return found
    return require_file(f"SadTalker_V0.0.2_{size}.safetensors", dirs)
