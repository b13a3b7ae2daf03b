"""Loader node: checkpoint folders + device + detector -> SADTALKER_MODELS."""

from __future__ import annotations

import os

from ..sadtalker_core.config import AUTO, DETECTORS
from ..sadtalker_core.models import network_file
from ..sadtalker_core.pipeline import SadTalkerPipeline
from . import _host
from .types import MODELS, SadTalkerModels

SIZES = ("256", "512")  # render resolutions of the official checkpoints, px
# Networks whose files are resolved at load time, so a missing file is reported on this node.
# (MappingNet depends on the preprocess mode and is resolved by the render node.)
REQUIRED_NETWORKS = ("face_3drecon", "audio2exp", "audio2pose", "kp_extractor", "generator")


class SadTalkerLoadModels:
    CATEGORY = "SadTalker"
    DESCRIPTION = (
        "Finds the SadTalker checkpoints (the official files, unchanged) and the face detector. "
        "Searched folders, in order: checkpoint_dir, SADTALKER_CHECKPOINTS, ComfyUI/models/"
        "sadtalker (and 'sadtalker:' entries of extra_model_paths.yaml), the pack's checkpoints/. "
        "The networks load on first use and stay loaded for later runs."
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
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint_dir: str = ""):
        folder = os.path.expanduser(checkpoint_dir.strip())
        if folder and not os.path.isdir(folder):
            return f"checkpoint_dir '{checkpoint_dir}' is not a folder."
        return True

    def load(self, size: str, detector: str, checkpoint_dir: str = ""):
        pipeline = SadTalkerPipeline(_host.checkpoint_dirs(checkpoint_dir), _host.torch_device())
        for network in REQUIRED_NETWORKS:
            network_file(network, pipeline.dirs, int(size))  # raises ModelNotFoundError
        pipeline.extractor.detector(detector)  # builds it; says what to install when unavailable
        return (SadTalkerModels(pipeline, int(size), detector),)


NODE_CLASS_MAPPINGS = {"SadTalkerLoadModels": SadTalkerLoadModels}
NODE_DISPLAY_NAME_MAPPINGS = {"SadTalkerLoadModels": "SadTalker Load Models"}
