"""Wire types of the node pack: the socket names ComfyUI shows and what travels on each."""

from __future__ import annotations

from dataclasses import dataclass

from ..sadtalker_core.pipeline import SadTalkerPipeline
from ._host import io

MODELS = "SADTALKER_MODELS"  # SadTalkerModels (below)
FACE = "SADTALKER_FACE"  # sadtalker_core.types.Face: crop, crop box, 3DMM coefficients
COEFFS = "SADTALKER_COEFFS"  # sadtalker_core.types.Coeffs: (T, 70) rows, fps, 16 kHz audio

# The same types as V3 schema types (inputs: ``Models.Input(...)``, outputs: ``Models.Output``).
Models = io.Custom(MODELS)
FaceType = io.Custom(FACE)
CoeffsType = io.Custom(COEFFS)


@dataclass(frozen=True)
class SadTalkerModels:
    """What the loader hands on: the pipeline (networks load on first use, once per process)
    and the choices every later stage must agree on.

    Attributes:
        pipeline: checkpoint folders and device; caches the loaded networks.
        size: render resolution, 256 or 512 px.
        detector: face detector backend: auto | official | face_alignment | dlib.
    """

    pipeline: SadTalkerPipeline
    size: int
    detector: str


def models_input() -> io.Input:
    return Models.Input("models", tooltip="From SadTalker Load Models.")


def face_input() -> io.Input:
    return FaceType.Input("face", tooltip="From SadTalker Face Crop.")
