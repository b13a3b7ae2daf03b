"""Every official checkpoint file, the networks inside it, where to find it and how to load it."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelNotFoundError, UnsupportedCheckpointError
from .checkpoint import Checkpoint, StateDict, canonicalize, compare_state_dict, load_strict

log = logging.getLogger(__name__)

ENV_CHECKPOINTS = "SADTALKER_CHECKPOINTS"
RELEASE_URL = "https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc"
RELEASE_URL_OLD = "https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2"


# --------------------------------------------------------------------------------------------
# Networks


@dataclass(frozen=True)
class NetworkSpec:
    """How to build one network from its state dict.

    Attributes:
        id: registry id, also the key prefix inside the combined safetensors (if it is there).
        build: ``build(sd, **options)`` builds the un-loaded module; sizes are read off the
            tensors unless the file spec fixes them in ``options``.
        description: what the network does, for messages.
    """

    id: str
    build: Callable[..., nn.Module]
    description: str


def _build_kp_extractor(sd: StateDict, **options) -> nn.Module:
    from ..render.keypoint import KPDetector, KPDetectorConfig

    return KPDetector(KPDetectorConfig())


def _build_generator(sd: StateDict, **options) -> nn.Module:
    from ..render.generator import GeneratorConfig, OcclusionAwareSPADEGenerator

    return OcclusionAwareSPADEGenerator(GeneratorConfig())


def _build_mapping(sd: StateDict, coeff_nc: int | None = None) -> nn.Module:
    from ..render.mapping import MappingNet, MappingNetConfig

    if coeff_nc is None:
        first = sd.get("first.0.weight")
        coeff_nc = int(first.shape[1]) if first is not None and first.ndim == 3 else 70
    return MappingNet(MappingNetConfig(coeff_nc=coeff_nc))


def _build_audio2exp(sd: StateDict, **options) -> nn.Module:
    from ..coeffs.audio2exp.net import Audio2ExpConfig, Audio2ExpNet

    return Audio2ExpNet(Audio2ExpConfig())


def _build_audio2pose(sd: StateDict, **options) -> nn.Module:
    from ..coeffs.audio2pose.cvae import Audio2PoseConfig, Audio2PoseNet

    return Audio2PoseNet(Audio2PoseConfig())


def _build_face_3drecon(sd: StateDict, **options) -> nn.Module:
    from ..face.recon3dmm import ReconNet, ReconNetConfig

    return ReconNet(ReconNetConfig())


NETWORKS: dict[str, NetworkSpec] = {
    s.id: s
    for s in (
        NetworkSpec("kp_extractor", _build_kp_extractor, "canonical 3-D keypoint detector"),
        NetworkSpec("generator", _build_generator, "occlusion-aware SPADE face generator"),
        NetworkSpec("mapping", _build_mapping, "MappingNet (coefficients -> head motion)"),
        NetworkSpec("audio2exp", _build_audio2exp, "ExpNet (audio -> expression)"),
        NetworkSpec("audio2pose", _build_audio2pose, "PoseVAE (audio -> head pose)"),
        NetworkSpec("face_3drecon", _build_face_3drecon, "ResNet-50 3DMM reconstruction net"),
    )
}


# --------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True)
class CheckpointFile:
    """One official file users download.

    Attributes:
        name: exact file name as published (including the official "auido" misspelling).
        role: what the file is for, shown by ``check-weights``.
        size_mb: approximate published size in MB, for the user.
        url: where it is published.
        sections: network id -> section inside the file: the key prefix of a safetensors file or
            the top-level dict entry of a torch file.
        size: render resolution the file serves (256/512), or None when not size-specific.
        needed_for: which use needs it (``"core"``, ``"full"``, ``"legacy"``, ``"enhancer"``,
            ``"detector"``); decides whether its absence stops a run.
        required_entries: extra top-level entries a torch file must have (``'epoch'``).
        required_keys: for files loaded by other libraries, keys that identify the format.
        options: network id -> build options this file fixes (e.g. MappingNet input width), so
            a file under the wrong name is reported instead of silently accepted.
    """

    name: str
    role: str
    size_mb: int
    url: str
    sections: dict[str, str] = field(default_factory=dict)
    size: int | None = None
    needed_for: str = "core"
    required_entries: tuple[str, ...] = ()
    required_keys: tuple[str, ...] = ()
    options: dict[str, dict] = field(default_factory=dict)

    @property
    def download_hint(self) -> str:
        return f"Download {self.name} from {self.url}"


_COMBINED_SECTIONS = {
    n: n for n in ("kp_extractor", "generator", "audio2exp", "audio2pose", "face_3drecon")
}

FILES: dict[str, CheckpointFile] = {
    f.name: f
    for f in (
        CheckpointFile(
            "SadTalker_V0.0.2_256.safetensors",
            "all SadTalker networks for 256 px rendering (except MappingNet)",
            725,
            f"{RELEASE_URL}/SadTalker_V0.0.2_256.safetensors",
            _COMBINED_SECTIONS,
            size=256,
        ),
        CheckpointFile(
            "SadTalker_V0.0.2_512.safetensors",
            "all SadTalker networks for 512 px rendering (except MappingNet)",
            725,
            f"{RELEASE_URL}/SadTalker_V0.0.2_512.safetensors",
            _COMBINED_SECTIONS,
            size=512,
        ),
        CheckpointFile(
            "mapping_00229-model.pth.tar",
            "MappingNet for the crop / extcrop / resize modes (70 coefficients)",
            155,
            f"{RELEASE_URL}/mapping_00229-model.pth.tar",
            {"mapping": "mapping"},
            required_entries=("epoch",),
            options={"mapping": {"coeff_nc": 70}},
        ),
        CheckpointFile(
            "mapping_00109-model.pth.tar",
            "MappingNet for the full / extfull modes (73 coefficients)",
            155,
            f"{RELEASE_URL}/mapping_00109-model.pth.tar",
            {"mapping": "mapping"},
            needed_for="full",
            required_entries=("epoch",),
            options={"mapping": {"coeff_nc": 73}},
        ),
        CheckpointFile(
            "epoch_20.pth",
            "old split format: 3DMM reconstruction net",
            288,
            f"{RELEASE_URL_OLD}/epoch_20.pth",
            {"face_3drecon": "net_recon"},
            needed_for="legacy",
        ),
        CheckpointFile(
            "auido2exp_00300-model.pth",
            "old split format: ExpNet",
            34,
            f"{RELEASE_URL_OLD}/auido2exp_00300-model.pth",
            {"audio2exp": "model"},
            needed_for="legacy",
            required_entries=("epoch",),
        ),
        CheckpointFile(
            "auido2pose_00140-model.pth",
            "old split format: PoseVAE",
            95,
            f"{RELEASE_URL_OLD}/auido2pose_00140-model.pth",
            {"audio2pose": "model"},
            needed_for="legacy",
            required_entries=("epoch",),
        ),
        CheckpointFile(
            "facevid2vid_00189-model.pth.tar",
            "old split format: keypoint detector + generator (256 px)",
            2112,
            f"{RELEASE_URL_OLD}/facevid2vid_00189-model.pth.tar",
            {"kp_extractor": "kp_detector", "generator": "generator"},
            size=256,
            needed_for="legacy",
        ),
        CheckpointFile(
            "GFPGANv1.4.pth",
            "GFPGAN v1.4 face enhancer (optional)",
            333,
            "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
            needed_for="enhancer",
            required_keys=("toRGB.0.weight", "stylegan_decoder.style_mlp.1.weight"),
        ),
        CheckpointFile(
            "RestoreFormer.pth",
            "RestoreFormer face enhancer (optional, --enhancer RestoreFormer)",
            290,
            "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/RestoreFormer.pth",
            needed_for="enhancer",
            required_keys=("quantize.embedding.weight", "encoder.conv_in.weight"),
        ),
        CheckpointFile(
            "detection_Resnet50_Final.pth",
            "RetinaFace face detector of the official pipeline (optional)",
            105,
            "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
            needed_for="detector",
            required_keys=("body.conv1.weight",),
        ),
        CheckpointFile(
            "alignment_WFLW_4HG.pth",
            "AWing 98-point landmark net of the official pipeline (optional)",
            185,
            "https://github.com/xinntao/facexlib/releases/download/v0.1.0/alignment_WFLW_4HG.pth",
            needed_for="detector",
            required_keys=("conv1.conv.weight", "l3.weight"),
        ),
    )
}

# The old split files that together replace one combined safetensors (256 px only).
LEGACY_SET = (
    "epoch_20.pth",
    "auido2exp_00300-model.pth",
    "auido2pose_00140-model.pth",
    "facevid2vid_00189-model.pth.tar",
)


def mapping_file_for(preprocess: str) -> str:
    """MappingNet file of a preprocess mode: ``full``/``extfull`` use the 73-input net."""
    return "mapping_00109-model.pth.tar" if "full" in preprocess else "mapping_00229-model.pth.tar"


# --------------------------------------------------------------------------------------------
# Discovery


def default_checkpoint_dirs(
    explicit: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
) -> list[Path]:
    """Folders searched for checkpoints, in order.

    1. ``explicit`` (a folder or a list of folders given by the caller: CLI flag, node, tab);
    2. the ``SADTALKER_CHECKPOINTS`` environment variable (``os.pathsep``-separated);
    3. ComfyUI's ``models/sadtalker`` when this pack sits in ``<ComfyUI>/custom_nodes/``;
    4. A1111/Forge's ``models/SadTalker`` when this pack sits in ``<webui>/extensions/``;
    5. ``checkpoints/`` inside the pack (where the official scripts put them).
    Each folder's ``gfpgan/weights`` sub-folder is searched too (official enhancer layout).
    """
    dirs: list[Path] = []
    if explicit:
        items = [explicit] if isinstance(explicit, (str, os.PathLike)) else list(explicit)
        dirs += [Path(p).expanduser() for p in items]
    env = os.environ.get(ENV_CHECKPOINTS)
    if env:
        dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    pack = Path(__file__).resolve().parent.parent.parent
    host = pack.parent
    if host.name == "custom_nodes":
        dirs.append(host.parent / "models" / "sadtalker")
    elif host.name == "extensions":
        dirs.append(host.parent / "models" / "SadTalker")
    dirs.append(pack / "checkpoints")
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        if d not in seen:
            seen.add(d)
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


# --------------------------------------------------------------------------------------------
# Loading and caching


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


_lock = threading.RLock()
_checkpoints: dict[tuple, Checkpoint] = {}
_modules: dict[tuple, LoadedModel] = {}


def file_key(path: Path) -> tuple:
    """Cache key of a file: resolved path, size and modification time (a replaced file reloads)."""
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open ``path`` once per process (cached by path, size and modification time)."""
    path = Path(path)
    key = file_key(path)
    with _lock:
        ckpt = _checkpoints.get(key)
        if ckpt is None:
            spec = FILES.get(path.name)
            ckpt = Checkpoint(path, spec.download_hint if spec else "")
            _checkpoints[key] = ckpt
        return ckpt


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Whole state dict of a single-network file: a plain dict, or one wrapped in ``state_dict`` /
    ``params_ema`` / ``params``, ``module.`` prefixes stripped; a safetensors conversion of the
    same keys is accepted too. Read safely (``weights_only``) through the process cache."""
    ckpt = open_checkpoint(path)
    if ckpt.format == "safetensors":
        from safetensors.torch import load_file

        return canonicalize(load_file(str(path)))
    return canonicalize({k: ckpt.section(k) for k in ckpt.keys()})  # noqa: SIM118


def clear_cache() -> None:
    """Forget every opened file and built module (frees their memory once unreferenced)."""
    with _lock:
        _checkpoints.clear()
        _modules.clear()


def _section_of(path: Path, network: str) -> str:
    spec = FILES.get(path.name)
    if spec is not None:
        if network not in spec.sections:
            raise UnsupportedCheckpointError(
                f"{path.name} does not contain the {NETWORKS[network].description} ('{network}'). "
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


def load_network(
    network: str,
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Build ``network`` from the file at ``path`` and load it strictly; cached per (file, device, dtype).

    Raises:
        UnsupportedCheckpointError: the file is damaged or holds another architecture.
        KeyError: unknown network id.
    """
    spec = NETWORKS[network]
    path = Path(path)
    device = torch.device(device)
    key = (file_key(path), network, str(device), dtype)
    with _lock:
        hit = _modules.get(key)
        if hit is not None:
            return hit
        ckpt = open_checkpoint(path)
        file_spec = FILES.get(path.name)
        sd = ckpt.state_dict(_section_of(path, network))
        for entry in file_spec.required_entries if file_spec else ():
            ckpt.section(entry)
        options = file_spec.options.get(network, {}) if file_spec else {}
        module = _build_empty(spec, sd, options)
        hint = file_spec.download_hint if file_spec else ""
        load_strict(module, sd, f"The {spec.description} in {path}", hint)
        del sd
        module = module.to(device=device, dtype=dtype).eval().requires_grad_(False)
        loaded = LoadedModel(
            spec, module, path, file_spec.size if file_spec else None, device, dtype
        )
        _modules[key] = loaded
        log.info("loaded %s from %s on %s (%s)", network, path.name, device, dtype)
        return loaded


# --------------------------------------------------------------------------------------------
# Validation (check-weights)


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
        module = NETWORKS[network].build(fake, **options)
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
                problems.append(f"no '{section}' block ({NETWORKS[network].description})")
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
    sizes = [s for s in (256, 512) if f"SadTalker_V0.0.2_{s}.safetensors" in ok]
    if 256 not in sizes and all(n in ok for n in LEGACY_SET):
        sizes.insert(0, 256)
    return sizes


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
    sizes = [size] + ([s for s in (256, 512) if s != size] if size_free else [])
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
