"""Loader node: checkpoint folders + device + detector -> SADTALKER_MODELS."""

from __future__ import annotations

import os

from ..sadtalker_core.config import AUTO
from ..sadtalker_core.models import default_checkpoint_dirs, network_file
from ..sadtalker_core.models.download import files_for
from ..sadtalker_core.pipeline import SadTalkerPipeline
from . import _host
from ._host import io
from ._inputs import option_input, option_values
from .types import Models, SadTalkerModels

# Networks whose files are resolved at load time, so a missing file is reported on this node.
# (MappingNet depends on the preprocess mode and is resolved by the render node.)
REQUIRED_NETWORKS = ("face_3drecon", "audio2exp", "audio2pose", "kp_extractor", "generator")
OFFICIAL_DETECTOR_FILES = ("detection_Resnet50_Final.pth", "alignment_WFLW_4HG.pth")


def files_to_fetch(size: int, detector: str) -> list[str]:
    """Official files Load Models needs for ``size`` and ``detector`` (the RetinaFace/AWing files
    only for the official detector and auto)."""
    names = files_for((size,))
    if detector not in (AUTO, "official"):
        names = [n for n in names if n not in OFFICIAL_DETECTOR_FILES]
    return names


class SadTalkerLoadModels(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SadTalkerLoadModels",
            display_name="SadTalker Load Models",
            category="SadTalker",
            description=(
                "Finds the SadTalker checkpoints (the official files, unchanged) and the face "
                "detector. Searched folders, in order: checkpoint_dir, ComfyUI/models/sadtalker "
                "(and 'sadtalker:' entries of extra_model_paths.yaml), SADTALKER_CHECKPOINTS, the "
                "pack's checkpoints/. With auto_download, missing official files are fetched into "
                "models/sadtalker. The networks load on first use and are then managed by ComfyUI "
                "like its own models (offloaded when another model needs the memory, freed by "
                "Unload Models)."
            ),
            inputs=[
                option_input(
                    "extract",
                    "size",
                    tooltip="Render resolution of the face: 256 (SadTalker_V0.0.2_256) or 512 "
                    "(SadTalker_V0.0.2_512, sharper, ~4x slower).",
                ),
                option_input(
                    "extract",
                    "detector",
                    tooltip="Face detector. auto: official (RetinaFace + AWing files), else "
                    "face_alignment (pip package), else dlib (offline; its landmark model is for "
                    "non-commercial use only).",
                ),
                io.String.Input(
                    "checkpoint_dir",
                    default="",
                    optional=True,
                    tooltip="Extra folder searched first for the checkpoint files; empty = "
                    "ComfyUI/models/sadtalker and the other default folders.",
                ),
                io.Boolean.Input(
                    "auto_download",
                    default=False,
                    optional=True,
                    tooltip="Download missing official files (SadTalker_V0.0.2_<size>, the "
                    "mapping nets, the official detector files) into ComfyUI/models/sadtalker, "
                    "with a progress bar; ~0.8 GB for 256. Offline it stops at once and lists "
                    "each file, its URL and the folder.",
                ),
            ],
            outputs=[
                Models.Output(
                    display_name="models",
                    tooltip="SadTalker networks, render size and face detector for the other "
                    "nodes.",
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, checkpoint_dir: str = "", **_) -> bool | str:
        folder = os.path.expanduser(checkpoint_dir.strip())
        if folder and not os.path.isdir(folder):
            return f"checkpoint_dir '{checkpoint_dir}' is not a folder."
        return True

    @classmethod
    def execute(
        cls, checkpoint_dir: str = "", auto_download: bool = False, **options
    ) -> io.NodeOutput:
        values = option_values(cls, options)
        size, detector = values["size"], values["detector"]
        dirs = _host.checkpoint_dirs(checkpoint_dir)
        if auto_download:
            searched = default_checkpoint_dirs(dirs)  # + SADTALKER_CHECKPOINTS, the pack's folder
            missing = _host.missing_files(files_to_fetch(size, detector), searched)
            if missing:
                _host.download(missing)
        pipeline = SadTalkerPipeline(dirs, _host.torch_device())
        for network in REQUIRED_NETWORKS:
            network_file(network, pipeline.dirs, size)  # raises ModelNotFoundError
        pipeline.extractor.detector(detector)  # builds it; says what to install when unavailable
        return io.NodeOutput(SadTalkerModels(pipeline, size, detector))
