"""Loader node: checkpoint folders + device + detector -> SADTALKER_MODELS."""

from __future__ import annotations

import os

from ..sadtalker_core.config import AUTO, DETECTORS
from ..sadtalker_core.models import default_checkpoint_dirs, network_file
from ..sadtalker_core.models.download import files_for
from ..sadtalker_core.pipeline import SadTalkerPipeline
from . import _host
from .types import MODELS, SadTalkerModels

SIZES = ("256", "512")  # render resolutions of the official checkpoints, px
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


class SadTalkerLoadModels:
    CATEGORY = "SadTalker"
    DESCRIPTION = (
        "Finds the SadTalker checkpoints (the official files, unchanged) and the face detector. "
        "Searched folders, in order: checkpoint_dir, ComfyUI/models/sadtalker (and 'sadtalker:' "
        "entries of extra_model_paths.yaml), SADTALKER_CHECKPOINTS, the pack's checkpoints/. "
        "With auto_download, missing official files are fetched into models/sadtalker. The "
        "networks load on first use and are then managed by ComfyUI like its own models "
        "(offloaded when another model needs the memory, freed by Unload Models)."
    )
    RETURN_TYPES = (MODELS,)
    RETURN_NAMES = ("models",)
    OUTPUT_TOOLTIPS = ("SadTalker networks, render size and face detector for the other nodes.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "size": (
                    list(SIZES),
                    {
                        "default": "256",
                        "tooltip": "Render resolution of the face: 256 (SadTalker_V0.0.2_256) or "
                        "512 (SadTalker_V0.0.2_512, sharper, ~4x slower).",
                    },
                ),
                "detector": (
                    [AUTO, *DETECTORS],
                    {
                        "default": AUTO,
                        "tooltip": "Face detector. auto: official (RetinaFace + AWing files), else "
                        "face_alignment (pip package), else dlib (offline; its landmark model is "
                        "for non-commercial use only).",
                    },
                ),
            },
            "optional": {
                "checkpoint_dir": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Extra folder searched first for the checkpoint files; empty = "
                        "ComfyUI/models/sadtalker and the other default folders.",
                    },
                ),
                "auto_download": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Download missing official files (SadTalker_V0.0.2_<size>, "
                        "the mapping nets, the official detector files) into ComfyUI/models/"
                        "sadtalker, with a progress bar; ~0.8 GB for 256. Offline it stops at "
                        "once and lists each file, its URL and the folder.",
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint_dir: str = ""):
        folder = os.path.expanduser(checkpoint_dir.strip())
        if folder and not os.path.isdir(folder):
            return f"checkpoint_dir '{checkpoint_dir}' is not a folder."
        return True

    def load(self, size: str, detector: str, checkpoint_dir: str = "", auto_download=False):
        dirs = _host.checkpoint_dirs(checkpoint_dir)
        if auto_download:
            searched = default_checkpoint_dirs(dirs)  # + SADTALKER_CHECKPOINTS, the pack's folder
            missing = _host.missing_files(files_to_fetch(int(size), detector), searched)
            if missing:
                _host.download(missing)
        pipeline = SadTalkerPipeline(dirs, _host.torch_device())
        for network in REQUIRED_NETWORKS:
            network_file(network, pipeline.dirs, int(size))  # raises ModelNotFoundError
        pipeline.extractor.detector(detector)  # builds it; says what to install when unavailable
        return (SadTalkerModels(pipeline, int(size), detector),)


NODE_CLASS_MAPPINGS = {"SadTalkerLoadModels": SadTalkerLoadModels}
NODE_DISPLAY_NAME_MAPPINGS = {"SadTalkerLoadModels": "SadTalker Load Models"}
