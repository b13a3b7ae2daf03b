"""Reading checkpoint files safely: safetensors or weights-only pickles, sections, strict loading."""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import UnsupportedCheckpointError

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

_SAFETENSORS_SUFFIXES = (".safetensors",)


class Checkpoint:
    """One checkpoint file opened for reading, without loading tensors it is not asked for.

    A safetensors file is memory-mapped and its tensors are read on demand, so a block of the
    combined ``SadTalker_V0.0.2_*.safetensors`` costs only its own bytes. A ``.pth``/``.pth.tar``
    file is a ``torch.save`` of a dict of sections; it is opened with ``weights_only=True`` (no
    code execution) and memory-mapped where the zip layout allows it.
    """

    def __init__(self, path: str | Path, fix_hint: str = ""):
        self.path = Path(path)
        self.fix_hint = fix_hint
        self._handle = None
        self._sections: dict | None = None
        self.format = self._sniff()
        try:
            if self.format == "safetensors":
                from safetensors import safe_open

                self._handle = safe_open(str(self.path), framework="pt", device="cpu")
                self._keys = list(self._handle.keys())
            else:
                self._sections = _torch_load(self.path)
                if not isinstance(self._sections, Mapping):
                    raise UnsupportedCheckpointError(
                        f"{self.path.name}: expected a dict of sections, found "
                        f"{type(self._sections).__name__}."
                    )
                self._keys = list(self._sections.keys())
        except UnsupportedCheckpointError as e:
            raise self._error(str(e)) from e
        except pickle.UnpicklingError as e:
            if "weights only" in str(e).lower() or "weights_only" in str(e):
                raise UnsupportedCheckpointError(
                    f"Checkpoint file {self.path} holds Python objects other than tensors, so it "
                    "was refused (loading it could run code). It is not an official file."
                    + (f"\n{self.fix_hint}" if self.fix_hint else "")
                ) from e
            raise self._error(f"cannot be read (UnpicklingError: {_first_line(e)})") from e
        except (OSError, RuntimeError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise self._error(f"cannot be read ({type(e).__name__}: {_first_line(e)})") from e
        except Exception as e:  # safetensors raises its own SafetensorError type
            if type(e).__name__ == "SafetensorError":
                raise self._error(f"cannot be read (SafetensorError: {_first_line(e)})") from e
            raise

    def _sniff(self) -> str:
        """Container format from the first bytes (names lie: renamed or failed downloads)."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(16)
        except OSError as e:
            raise self._error(f"cannot be opened ({e.strerror})") from e
        if not head:
            raise self._error("is empty (0 bytes)")
        if head.lstrip()[:1] in (b"<", b"{") or head.lower().startswith(
            (b"entry not", b"not found")
        ):
            raise UnsupportedCheckpointError(
                f"Checkpoint file {self.path} is a web page or text, not a checkpoint: the download "
                "failed." + (f"\n{self.fix_hint}" if self.fix_hint else "")
            )
        if len(head) >= 9 and head[8:9] == b"{":
            return "safetensors"
        if self.path.name.endswith(_SAFETENSORS_SUFFIXES) and not head.startswith((b"PK", b"\x80")):
            return "safetensors"  # let the safetensors reader explain what is wrong
        return "torch"

    def _error(self, what: str) -> UnsupportedCheckpointError:
        msg = f"Checkpoint file {self.path} {what}. It is probably truncated or corrupt."
        if self.fix_hint:
            msg += f"\n{self.fix_hint}"
        return UnsupportedCheckpointError(msg)

    def keys(self) -> list[str]:
        """Tensor keys (safetensors) or top-level section names (torch files)."""
        return list(self._keys)

    def sections(self) -> Mapping[str, object]:
        """All top-level entries of a torch file (empty for safetensors)."""
        return self._sections or {}

    def section(self, name: str) -> object:
        """A top-level entry of a torch file (``'mapping'``, ``'epoch'``...)."""
        if self._sections is None:
            raise KeyError(name)
        if name not in self._sections:
            raise UnsupportedCheckpointError(
                f"Checkpoint file {self.path} has no '{name}' entry (it has: "
                f"{', '.join(map(str, self._keys[:10]))}). It is not the expected file."
                + (f"\n{self.fix_hint}" if self.fix_hint else "")
            )
        return self._sections[name]

    def shapes(self, name: str) -> dict[str, torch.Size]:
        """Shapes of the state dict in section ``name``; safetensors: from the header, no data read."""
        if self.format == "safetensors":
            head = name + "."
            return {
                k[len(head) :]: torch.Size(self._handle.get_slice(k).get_shape())
                for k in self._keys
                if k.startswith(head)
            }
        return {k: v.shape for k, v in self.state_dict(name).items()}

    def state_dict(self, name: str) -> StateDict:
        """The state dict stored in section ``name`` (torch) or under prefix ``name.`` (safetensors)."""
        if self.format == "safetensors":
            head = name + "."
            try:
                sd = {
                    k[len(head) :]: self._handle.get_tensor(k)
                    for k in self._keys
                    if k.startswith(head)
                }
            except Exception as e:  # SafetensorError on a damaged data region
                raise self._error(f"cannot be read ({type(e).__name__}: {_first_line(e)})") from e
            if not sd:
                raise UnsupportedCheckpointError(
                    f"Checkpoint file {self.path} has no tensors under '{head}'. It is not the "
                    "expected file." + (f"\n{self.fix_hint}" if self.fix_hint else "")
                )
            return sd
        section = self.section(name)
        if not isinstance(section, Mapping):
            raise UnsupportedCheckpointError(
                f"Checkpoint file {self.path}: entry '{name}' is a {type(section).__name__}, "
                "not a state dict." + (f"\n{self.fix_hint}" if self.fix_hint else "")
            )
        return canonicalize(section)


# Globals a weights-only load may resolve beyond torch's defaults: numpy scalar and dtype
# reconstructors (published checkpoints store ``epoch``/metrics as numpy scalars) and OrderedDict.
# They build plain numbers and dtypes; nothing else is allowed.
_HARMLESS_GLOBALS = frozenset(
    {
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.dtype",
        "collections.OrderedDict",
    }
)


def _is_harmless_global(name: str) -> bool:
    """True for ``_HARMLESS_GLOBALS`` and numpy's dtype classes (``numpy.dtypes.Float64DType``),
    except the object dtype."""
    if name in _HARMLESS_GLOBALS:
        return True
    head, _, cls = name.rpartition(".")
    return head == "numpy.dtypes" and cls.endswith("DType") and cls != "ObjectDType"


def _refused_global(e: BaseException) -> str | None:
    """The dotted name of the global or type a weights-only unpickler refused (its message)."""
    import re

    text = str(e)
    m = re.search(r"GLOBAL ([\w.]+) was not an allowed global", text) or re.search(
        r"but got <class '([\w.]+)'>", text
    )  # the second: an object built by an allowed global whose type is not (numpy dtypes)
    return m.group(1) if m else None


def _resolve_global(name: str) -> object:
    """Import ``module.attr`` (``numpy.core`` is numpy 2's deprecated alias of ``numpy._core``)."""
    import importlib
    import warnings

    module, _, attr = name.rpartition(".")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(importlib.import_module(module), attr)


# torch's own loader, reached through its module: hosts that replace ``torch.load`` (A1111's
# pickle checker returns None for files it refuses) do not affect our weights-only reads.
_load = torch.serialization.load


def _torch_load_once(path: Path) -> object:
    try:
        return _load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        # Old (non-zip) serialisation cannot be memory-mapped; read it plainly.
        if "mmap" not in str(e):
            raise
        return _load(path, map_location="cpu", weights_only=True)


def _torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)`` of a zip or old (non-zip) torch file, memory-mapped where
    possible; globals in ``_is_harmless_global`` are allowed one by one as the unpickler asks.

    Raises:
        UnsupportedCheckpointError: the file needs any other global (naming it and the fix).
        pickle.UnpicklingError, RuntimeError, OSError...: the file is damaged.
    """
    allowed: list[tuple[object, str]] = []
    while True:
        try:
            with torch.serialization.safe_globals(allowed):
                return _torch_load_once(path)
        except pickle.UnpicklingError as e:
            name = _refused_global(e)
            if name is None:
                raise
            obj = None
            if _is_harmless_global(name) and name not in (n for _, n in allowed):
                try:
                    obj = _resolve_global(name)
                except (ImportError, AttributeError):
                    obj = None
            if obj is None:
                raise UnsupportedCheckpointError(
                    f"Checkpoint file {path} was refused: it needs the Python global '{name}', "
                    "which is not a tensor, number or known-harmless numpy type, and loading it "
                    "could run code. Download the official file again; if this file comes from "
                    "a source you trust, re-save only its tensors (torch.save(state_dict) or "
                    "safetensors) and use that file."
                ) from e
            allowed.append((obj, name))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def canonicalize(sd: Mapping[str, object]) -> StateDict:
    """Unwrap ``state_dict``/``params_ema`` containers and strip a DataParallel ``module.`` prefix."""
    for wrapper in ("state_dict", "params_ema", "params"):
        inner = sd.get(wrapper)
        if isinstance(inner, Mapping):
            sd = inner
            break
    out: StateDict = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out


def _summarise(keys: Iterable[str], limit: int = 5) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _same_shape(stored: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    # torch loads a 0-d entry (BatchNorm num_batches_tracked) from a [1] tensor as well.
    return stored == expected or (expected == () and stored == (1,))


def compare_state_dict(module: nn.Module, sd: Mapping[str, torch.Tensor]) -> list[str]:
    """Differences between what ``module`` expects and ``sd`` holds: missing, unexpected, shapes."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k} {list(sd[k].shape)} (expected {list(v.shape)})"
        for k, v in expected.items()
        if k in sd and not _same_shape(tuple(sd[k].shape), tuple(v.shape))
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_summarise(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_summarise(mismatched, 3)}")
    return problems


def load_strict(
    module: nn.Module, sd: Mapping[str, torch.Tensor], what: str, fix_hint: str = ""
) -> nn.Module:
    """``module.load_state_dict(sd, strict=True)`` with an error that says what does not fit.

    Args:
        module: the freshly built network.
        sd: its state dict, prefix already removed.
        what: a human description of the source, e.g. ``"generator in SadTalker_V0.0.2_256.safetensors"``.
        fix_hint: what the user should do (download location, expected folder).

    Raises:
        UnsupportedCheckpointError: keys or shapes do not match the architecture.
    """
    problems = compare_state_dict(module, sd)
    if problems:
        msg = f"{what} does not match the expected architecture: " + "; ".join(problems) + "."
        if fix_hint:
            msg += f"\n{fix_hint}"
        raise UnsupportedCheckpointError(msg)
    on_meta = any(t.is_meta for t in module.state_dict().values())
    module.load_state_dict(sd, strict=True, assign=on_meta)
    return module
