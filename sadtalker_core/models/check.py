"""Validating checkpoint files without loading them (``check-weights``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import SIZES
from ..errors import UnsupportedCheckpointError
from .checkpoint import Checkpoint, canonicalize, compare_state_dict
from .locate import find_file
from .registry import FILES, LEGACY_SET, CheckpointFile, network_spec


@dataclass(frozen=True)
class FileReport:
    """Result of checking one registry file: status is ``found``, ``missing`` or ``invalid``."""

    spec: CheckpointFile
    status: str
    path: Path | None = None
    reason: str = ""


def _expected_shapes(network: str, sd_shapes: dict[str, torch.Size], options: dict) -> list[str]:
    """Problems of a state dict (given only as shapes) against the network's architecture."""
    fake = {k: torch.empty(s, device="meta") for k, s in sd_shapes.items()}
    with torch.device("meta"):
        module = network_spec(network).build(fake, **options)
    return compare_state_dict(module, fake)


def validate_file(path: Path, spec: CheckpointFile) -> str:
    """Return '' when ``path`` is a complete, loadable ``spec`` file, else the reason it is not.

    Reads only the headers of safetensors files (fast); torch files are memory-mapped.
    """
    try:
        ckpt = Checkpoint(path, spec.download_hint)
        for entry in spec.required_entries:
            ckpt.section(entry)
        if spec.required_keys:
            if ckpt.format == "torch":
                keys = set(canonicalize(ckpt.sections()))  # unwraps params_ema/state_dict, module.
            else:
                keys = set(ckpt.keys())
            missing = [k for k in spec.required_keys if k not in keys]
            if missing:
                return f"not a {spec.role} file: missing {', '.join(missing)}"
        problems: list[str] = []
        for network, section in spec.sections.items():
            shapes = ckpt.shapes(section)
            if not shapes:
                problems.append(f"no '{section}' block ({network_spec(network).description})")
                continue
            for p in _expected_shapes(network, shapes, spec.options.get(network, {})):
                problems.append(f"{network}: {p}")
        return "; ".join(problems)
    except UnsupportedCheckpointError as e:
        return str(e).splitlines()[0]


def check_weights(dirs: Sequence[Path]) -> list[FileReport]:
    """Check every registry file in ``dirs``: found (valid), missing, or invalid with the reason."""
    reports = []
    for spec in FILES.values():
        path = find_file(spec.name, dirs)
        if path is None:
            reports.append(FileReport(spec, "missing"))
            continue
        reason = validate_file(path, spec)
        reports.append(FileReport(spec, "invalid" if reason else "found", path, reason))
    return reports


def runnable_sizes(reports: Sequence[FileReport]) -> list[int]:
    """Render sizes for which a complete, valid set of core files was found."""
    ok = {r.spec.name for r in reports if r.status == "found"}
    if "mapping_00229-model.pth.tar" not in ok and "mapping_00109-model.pth.tar" not in ok:
        return []
    sizes = [s for s in SIZES if f"SadTalker_V0.0.2_{s}.safetensors" in ok]
    if 256 not in sizes and all(n in ok for n in LEGACY_SET):
        sizes.insert(0, 256)
    return sizes
