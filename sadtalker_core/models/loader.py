"""Loading networks from official files through the one model cache (``cache.MODELS``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import UnsupportedCheckpointError
from .cache import MODELS, ModelRef
from .checkpoint import Checkpoint, StateDict, canonicalize, load_strict
from .registry import FILES, NetworkSpec, network_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A network loaded from an official file, with what we know about it.

    Attributes:
        spec: the network spec.
        module: the network in eval mode with gradients disabled.
        path: file it came from.
        size: render resolution of the file (256/512) or None.
        device: device of the module.
        dtype: parameter dtype of the module.
    """

    spec: NetworkSpec
    module: nn.Module
    path: Path
    size: int | None
    device: torch.device
    dtype: torch.dtype

    def nn_modules(self) -> list[nn.Module]:
        return [self.module]


def file_key(path: Path) -> tuple:
    """Identity of a file: resolved path, size and modification time (a replaced file reloads)."""
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open ``path`` once per process (a cache entry without weights of its own)."""
    path = Path(path)
    spec = FILES.get(path.name)
    return MODELS.get(
        ("file", file_key(path)),
        lambda: Checkpoint(path, spec.download_hint if spec else ""),
        "cpu",
        name=path.name,
        path=path,
    )


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Whole state dict of a single-network file: a plain dict, or one wrapped in ``state_dict`` /
    ``params_ema`` / ``params``, ``module.`` prefixes stripped; a safetensors conversion of the
    same keys is accepted too. Read safely (``weights_only``)."""
    ckpt = open_checkpoint(path)
    if ckpt.format == "safetensors":
        from safetensors.torch import load_file

        return canonicalize(load_file(str(path)))
    return canonicalize({k: ckpt.section(k) for k in ckpt.keys()})  # noqa: SIM118


def clear_cache() -> None:
    """Forget every opened file and built network (frees their memory once unreferenced)."""
    MODELS.clear()


def _section_of(path: Path, network: str) -> str:
    spec = FILES.get(path.name)
    if spec is not None:
        if network not in spec.sections:
            raise UnsupportedCheckpointError(
                f"{path.name} does not contain the {network_spec(network).description} ('{network}'). "
                f"Files that do: {', '.join(n for n, f in FILES.items() if network in f.sections)}."
            )
        return spec.sections[network]
    return network  # an unknown file name: assume the combined-safetensors layout


def _build_empty(spec: NetworkSpec, sd: StateDict, options: dict) -> nn.Module:
    """Build the module without spending time on random initialisation.

    It is built on the meta device and given real storage by ``load_strict`` (``assign``). A module
    that computes constant, non-persistent buffers in ``__init__`` cannot be built that way and is
    built normally on the CPU.
    """
    with torch.device("meta"):
        module = spec.build(sd, **options)
    if any(m._non_persistent_buffers_set for m in module.modules()):
        module = spec.build(sd, **options)
    return module


def network_ref(
    network: str,
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> NetworkRef:
    """A handle on ``network`` of ``path`` in the cache, built and loaded strictly now;
    ``ref()`` is its module, ``ref.loaded()`` the :class:`LoadedModel`. Cached per (file, device,
    dtype) in ``MODELS``.

    Raises:
        UnsupportedCheckpointError: the file is damaged or holds another architecture.
        KeyError: unknown network id.
    """
    spec = network_spec(network)
    path = Path(path)
    device = torch.device(device)
    file_spec = FILES.get(path.name)

    def build() -> LoadedModel:
        ckpt = open_checkpoint(path)
        sd = ckpt.state_dict(_section_of(path, network))
        for entry in file_spec.required_entries if file_spec else ():
            ckpt.section(entry)
        options = file_spec.options.get(network, {}) if file_spec else {}
        module = _build_empty(spec, sd, options)
        hint = file_spec.download_hint if file_spec else ""
        load_strict(module, sd, f"The {spec.description} in {path}", hint)
        del sd
        module = module.to(device=device, dtype=dtype).eval().requires_grad_(False)
        log.info("loaded %s from %s on %s (%s)", network, path.name, device, dtype)
        return LoadedModel(spec, module, path, file_spec.size if file_spec else None, device, dtype)

    key = ("network", network, file_key(path), str(device), dtype)
    ref = NetworkRef(MODELS, key, build, device, f"{network} ({path.name})", path)
    ref()
    return ref


class NetworkRef(ModelRef):
    """A :class:`ModelRef` on a :class:`LoadedModel`: ``ref()`` is the module itself."""

    def loaded(self) -> LoadedModel:
        return super().__call__()

    def __call__(self) -> nn.Module:
        return self.loaded().module
