"""The official checkpoint files and the networks inside them: written once, read everywhere.

Networks are listed in one table (``NETWORKS``): each names the stage function that builds it,
imported only when a network is built (this package imports no stage).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

RELEASE_URL = "https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc"
RELEASE_URL_OLD = "https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2"
FACEXLIB_URL = "https://github.com/xinntao/facexlib/releases/download"
GFPGAN_URL = "https://github.com/TencentARC/GFPGAN/releases/download"


# --------------------------------------------------------------------------------------------
# Networks


@dataclass(frozen=True)
class NetworkSpec:
    """How to build one network from its state dict.

    Attributes:
        id: registry id, also the key prefix inside the combined safetensors (if it is there).
        builder: ``"stage.module:function"`` under sadtalker_core; ``function(sd, **options)``
            builds the un-loaded module; sizes are read off the tensors unless the file spec
            fixes them in ``options``.
        description: what the network does, for messages.
    """

    id: str
    builder: str
    description: str

    @property
    def build(self) -> Callable[..., nn.Module]:
        """The builder function (its stage module is imported now)."""
        module, _, name = self.builder.partition(":")
        core = __name__.rpartition(".models.")[0]  # sadtalker_core, also as a subpackage
        return getattr(importlib.import_module(f"{core}.{module}"), name)


NETWORKS: dict[str, NetworkSpec] = {
    spec.id: spec
    for spec in (
        NetworkSpec(
            "face_3drecon", "face.recon3dmm:build_recon_net", "ResNet-50 3DMM reconstruction net"
        ),
        NetworkSpec(
            "audio2exp", "coeffs.audio2exp.net:build_exp_net", "ExpNet (audio -> expression)"
        ),
        NetworkSpec(
            "audio2pose", "coeffs.audio2pose.cvae:build_pose_net", "PoseVAE (audio -> head pose)"
        ),
        NetworkSpec(
            "kp_extractor", "render.keypoint:build_kp_detector", "canonical 3-D keypoint detector"
        ),
        NetworkSpec(
            "generator", "render.generator:build_generator", "occlusion-aware SPADE face generator"
        ),
        NetworkSpec(
            "mapping", "render.mapping:build_mapping", "MappingNet (coefficients -> head motion)"
        ),
    )
}
"""Network id -> how to build it: every network of the pipeline, in one table."""


def network_spec(id: str) -> NetworkSpec:  # noqa: A002
    try:
        return NETWORKS[id]
    except KeyError:
        raise KeyError(f"Unknown network '{id}'. Known: {', '.join(sorted(NETWORKS))}.") from None


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
            f"{GFPGAN_URL}/v1.3.0/GFPGANv1.4.pth",
            needed_for="enhancer",
            required_keys=("toRGB.0.weight", "stylegan_decoder.style_mlp.1.weight"),
        ),
        CheckpointFile(
            "RestoreFormer.pth",
            "RestoreFormer face enhancer (optional, --enhancer RestoreFormer)",
            290,
            f"{GFPGAN_URL}/v1.3.4/RestoreFormer.pth",
            needed_for="enhancer",
            required_keys=("quantize.embedding.weight", "encoder.conv_in.weight"),
        ),
        CheckpointFile(
            "parsing_parsenet.pth",
            "face-parsing mask for pasting restored faces back (optional, used when present)",
            85,
            f"{FACEXLIB_URL}/v0.2.2/parsing_parsenet.pth",
            needed_for="enhancer",
            required_keys=("encoder.0.conv2d.weight", "out_mask_conv.conv2d.weight"),
        ),
        CheckpointFile(
            "RealESRGAN_x2plus.pth",
            "Real-ESRGAN x2 background upscaler (optional, --background_enhancer realesrgan)",
            67,
            "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
            needed_for="enhancer",
            required_keys=("conv_first.weight", "body.0.rdb1.conv1.weight"),
        ),
        CheckpointFile(
            "detection_Resnet50_Final.pth",
            "RetinaFace face detector of the official pipeline (optional)",
            105,
            f"{FACEXLIB_URL}/v0.1.0/detection_Resnet50_Final.pth",
            needed_for="detector",
            required_keys=("body.conv1.weight",),
        ),
        CheckpointFile(
            "alignment_WFLW_4HG.pth",
            "AWing 98-point landmark net of the official pipeline (optional)",
            185,
            f"{FACEXLIB_URL}/v0.1.0/alignment_WFLW_4HG.pth",
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
