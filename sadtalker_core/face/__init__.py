"""Face stage of SadTalker: crop/alignment math and the 3DMM coefficient regressor; the stage's
entry point is :class:`FaceExtractor`."""

from __future__ import annotations

from .align import (
    CropConfig,
    CropInfo,
    ReconAlignConfig,
    ReconAlignment,
    align_for_recon,
    apply_crop,
    compute_crop_info,
    crop_face,
    crop_quad_from_landmarks,
    fit_template_similarity,
    landmarks_68_to_5,
    load_lm3d_std_5,
    load_lm3d_std_68,
    resize_square,
)
from .detect import (
    DETECTORS,
    DetectedFace,
    DlibDetector,
    FaceAlignmentDetector,
    FaceDetector,
    OfficialDetector,
    available_detectors,
    clear_detector_cache,
    detect_faces,
    get_detector,
)
from .extract import FaceExtractor
from .recon3dmm import (
    ReconCoeffs,
    ReconNet,
    ReconNetConfig,
    aligned_to_tensor,
    coeff_3dmm_row,
)

__all__ = [
    "DETECTORS",
    "DetectedFace",
    "DlibDetector",
    "FaceAlignmentDetector",
    "FaceDetector",
    "FaceExtractor",
    "OfficialDetector",
    "available_detectors",
    "clear_detector_cache",
    "detect_faces",
    "get_detector",
    "CropConfig",
    "CropInfo",
    "ReconAlignConfig",
    "ReconAlignment",
    "ReconCoeffs",
    "ReconNet",
    "ReconNetConfig",
    "align_for_recon",
    "aligned_to_tensor",
    "apply_crop",
    "coeff_3dmm_row",
    "compute_crop_info",
    "crop_face",
    "crop_quad_from_landmarks",
    "fit_template_similarity",
    "landmarks_68_to_5",
    "load_lm3d_std_5",
    "load_lm3d_std_68",
    "resize_square",
]
