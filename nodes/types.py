"""Wire types of the node pack: the socket names ComfyUI shows and what travels on each."""

from __future__ import annotations

from dataclasses import dataclass

from ..sadtalker_core.pipeline import SadTalkerPipeline

MODELS = "SADTALKER_MODELS"  # SadTalkerModels (below)
FACE = "SADTALKER_FACE"  # sadtalker_core.types.Face: crop, crop box, 3DMM coefficients
COEFFS = "SADTALKER_COEFFS"  # sadtalker_core.types.Coeffs: (T, 70) rows, fps, 16 kHz audio


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
