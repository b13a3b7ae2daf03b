"""The official SadTalker face detector: RetinaFace boxes + AWing 98 -> 68 landmarks."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..models import FILES, read_state_dict, require_file
from ..models.checkpoint import load_strict
from .awing import AWingFAN, landmarks_98_to_68, predict_landmarks98
from .faces import DetectedFace, as_rgb_u8
from .retinaface import RetinaFace, detect_retinaface

log = logging.getLogger(__name__)

RETINAFACE_FILE = "detection_Resnet50_Final.pth"
AWING_FILE = "alignment_WFLW_4HG.pth"


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
