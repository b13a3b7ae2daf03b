"""3DMM extract stage: portrait in -> face crop, landmarks and 3DMM coefficients out (``Face``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import ExtractConfig
from ..errors import InvalidImageError, NoFaceDetectedError
from ..io.image import ImageInput, load_image
from ..io.video import read_frames, video_info
from ..models import default_checkpoint_dirs, network_file, network_ref
from ..progress import Progress
from ..types import Face
from .align import (
    CropInfo,
    align_for_recon,
    apply_crop,
    compute_crop_info,
    load_lm3d_std_68,
    resize_square,
)
from .detect import DetectedFace, detect_faces, get_detector
from .recon3dmm import aligned_to_tensor, coeff_3dmm_row

log = logging.getLogger(__name__)


def _template_landmarks(width: int, height: int) -> np.ndarray:
    """The official fallback when no landmarks exist: the standard template spread over the frame."""
    lm = (load_lm3d_std_68()[:, :2] + 1.0) / 2.0
    lm = np.stack([lm[:, 0] * width, lm[:, 1] * height], axis=1)
    lm[:, 1] = height - 1 - lm[:, 1]  # the template is y up; our landmarks are y down
    return lm.astype(np.float32)


def _frame_from_original(
    points: np.ndarray, info: CropInfo | None, image_size: tuple[int, int], size: int
) -> np.ndarray:
    """Map (N, 2) points of the original picture into the (size, size) crop frame."""
    w0, h0 = image_size
    pts = points.astype(np.float64).copy()
    if info is None:
        return (pts * np.array([size / w0, size / h0])).astype(np.float32)
    rw, rh = info.resized_size
    pts *= np.array([rw / w0, rh / h0])
    clx, cly, crx, cry = info.crop_box
    pts -= np.array([clx, cly])
    cw, ch = crx - clx, cry - cly
    if not info.extended:
        lx, ly, rx, ry = info.rect_int
        pts -= np.array([lx, ly])
        # the slice stops at the crop box edge (rect may reach past it: ry is clamped with W')
        cw, ch = min(rx, cw) - lx, min(ry, ch) - ly
    return (pts * np.array([size / max(cw, 1), size / max(ch, 1)])).astype(np.float32)


def _nearest_face(
    faces: Sequence[DetectedFace], expected: np.ndarray, max_shift: float
) -> np.ndarray | None:
    """Landmarks of the face in ``faces`` whose centre is nearest to that of ``expected`` (68, 2),
    or None when even the nearest is more than ``max_shift`` x the expected face size away."""
    if not faces:
        return None
    centre = expected.mean(axis=0)
    extent = float(np.max(expected.max(axis=0) - expected.min(axis=0)))
    lms = np.stack([np.asarray(f.landmarks, dtype=np.float32) for f in faces])  # (K, 68, 2)
    dist = np.linalg.norm(lms.mean(axis=1) - centre, axis=1)  # (K,)
    k = int(np.argmin(dist))
    return lms[k] if dist[k] <= max_shift * max(extent, 1.0) else None


class FaceExtractor:
    """Detects, crops and reconstructs faces; loads its networks once and is reusable.

    Args:
        checkpoint_dirs: folders searched for checkpoints (see ``default_checkpoint_dirs``).
        device: torch device of the reconstruction net (and the torch detectors).
    """

    def __init__(
        self,
        checkpoint_dirs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        device: str | torch.device = "cpu",
    ):
        self.dirs = default_checkpoint_dirs(checkpoint_dirs)
        self.device = torch.device(device)
        self._recon = None

    @property
    def recon(self) -> torch.nn.Module:
        if self._recon is None:
            path = network_file("face_3drecon", self.dirs)
            self._recon = network_ref("face_3drecon", path, self.device)
        return self._recon()

    def detector(self, name: str):
        """The face detector backend ``name`` (built once per process, see ``get_detector``)."""
        return get_detector(name, self.dirs, self.device)

    # ----------------------------------------------------------------------------------------

    def _landmarks(self, rgb: np.ndarray, cfg: ExtractConfig, what: str) -> tuple[np.ndarray, str]:
        """68 landmarks (y down, pixels of ``rgb``) of the chosen face, and the detector name."""
        det = self.detector(cfg.detector)
        faces = detect_faces(rgb, det, max_side=cfg.max_detect_side)
        h, w = rgb.shape[:2]
        if not faces:
            raise NoFaceDetectedError(
                f"No face found in {what} ({w}x{h}, detector '{det.name}'). Use a photo with a "
                "clearly visible, roughly frontal face, or a tighter crop of the face; "
                "preprocess='resize' animates the whole picture without a face crop."
            )
        if cfg.face_index >= len(faces):
            raise NoFaceDetectedError(
                f"face_index {cfg.face_index} asked for, but {what} has only {len(faces)} face(s) "
                f"(0 = the largest). Use a face_index from 0 to {len(faces) - 1}."
            )
        face = faces[cfg.face_index]
        x0, y0, x1, y1 = (float(v) for v in face.box)
        side = min(x1 - x0, y1 - y0)
        if side < cfg.min_face_side:
            raise InvalidImageError(
                f"The face in {what} is only {side:.0f} px across; at least {cfg.min_face_side} px "
                "is needed. Use a larger or tighter photo of the face."
            )
        if len(faces) > 1:
            log.info("%d faces found in %s; using face %d", len(faces), what, cfg.face_index)
        return np.asarray(face.landmarks, dtype=np.float32), det.name

    def _frame_landmarks(
        self, frame: np.ndarray, fallback: np.ndarray | None, cfg: ExtractConfig
    ) -> np.ndarray:
        """Landmarks on the (size, size) frame: detected again as the official code does (the
        face nearest to the original detection mapped into the frame), else that mapped
        detection, else the official template fallback."""
        faces = detect_faces(frame, self.detector(cfg.detector), max_side=cfg.max_detect_side)
        if fallback is None:
            if faces:
                return np.asarray(faces[0].landmarks, dtype=np.float32)
        else:
            found = _nearest_face(faces, fallback, cfg.max_track_shift)
            if found is not None:
                return found
            log.debug(
                "no face re-detected on the %dpx crop; using the mapped landmarks", frame.shape[0]
            )
            return fallback
        log.warning(
            "no face found on the resized picture; using the template landmarks (official fallback)"
        )
        return _template_landmarks(frame.shape[1], frame.shape[0])

    @torch.inference_mode()
    def _reconstruct(self, frames: Sequence[np.ndarray], lms: Sequence[np.ndarray]):
        """ResNet-50 coefficients of aligned frames: (N, 257), (N, 73), (N, 5) float32 arrays."""
        aligned, params = [], []
        for frame, lm in zip(frames, lms):
            a = align_for_recon(frame, lm)
            aligned.append(a.image)
            params.append(a.trans_params)
        batch = aligned_to_tensor(np.stack(aligned), self.device)
        full = self.recon(batch)  # (N, 3, 224, 224) -> (N, 257)
        tp = torch.from_numpy(np.stack(params)).to(self.device)
        row = coeff_3dmm_row(full, tp)  # (N, 73)
        return full.float().cpu().numpy(), row.float().cpu().numpy(), np.stack(params)

    def extract(
        self, image: ImageInput, config: ExtractConfig | None = None, name: str | None = None
    ) -> Face:
        """Run the stage on one picture.

        Args:
            image: path, bytes, PIL image, numpy array or tensor (see ``load_image``).
            config: stage options.
            name: how to call the picture in messages (defaults to the file name).

        Returns:
            ``Face`` with the crop at ``config.size`` and its coefficients.

        Raises:
            InvalidImageError: unreadable, too small, or face too small.
            NoFaceDetectedError: no face (or not that many faces) found.
        """
        cfg = config or ExtractConfig()
        src = load_image(image, name)
        w, h = src.size
        what = f"source image '{src.name}'"
        if min(w, h) < cfg.min_image_side:
            raise InvalidImageError(
                f"The {what} is only {w}x{h} px; SadTalker needs at least {cfg.min_image_side} px on "
                f"each side and a face at least {cfg.min_face_side} px across. Use a larger photo."
            )
        if cfg.preprocess == "resize":
            info = None
            crop = src.rgb
            try:
                lm_orig, det_name = self._landmarks(src.rgb, cfg, what)
            except NoFaceDetectedError:
                if cfg.face_index:
                    raise
                lm_orig, det_name = None, "template"
        else:
            lm_orig, det_name = self._landmarks(src.rgb, cfg, what)
            info = compute_crop_info(lm_orig, (w, h), extended=cfg.preprocess.startswith("ext"))
            crop = apply_crop(src.rgb, info)
        frame = resize_square(crop, cfg.size)
        mapped = None if lm_orig is None else _frame_from_original(lm_orig, info, (w, h), cfg.size)
        lm_frame = self._frame_landmarks(frame, mapped, cfg)
        full, row, params = self._reconstruct([frame], [lm_frame])
        log.info(
            "extracted face %d of %s (%dx%d) with %s, preprocess %s at %d px",
            cfg.face_index,
            src.name,
            w,
            h,
            det_name,
            cfg.preprocess,
            cfg.size,
        )
        return Face(
            image=src.rgb,
            alpha=src.alpha,
            crop=frame,
            crop_info=info,
            landmarks=lm_orig if lm_orig is not None else _template_landmarks(w, h),
            coeffs=full[0],
            coeff_3dmm=row[0],
            trans_params=params[0],
            preprocess=cfg.preprocess,
            size=cfg.size,
            detector=det_name,
            face_index=cfg.face_index,
        )

    def extract_video(
        self,
        video: str | os.PathLike,
        config: ExtractConfig | None = None,
        batch_size: int = 16,
        max_frames: int | None = None,
        progress: Progress | None = None,
    ) -> tuple[np.ndarray, float]:
        """Per-frame coefficients of a reference video (for ``ref_pose`` / ``ref_eyeblink``).

        The crop is placed from the first frame's face (as the official code does) and landmarks are
        detected on every frame, following the face nearest to the previous frame's (so
        ``face_index`` keeps its face); a frame without it reuses the previous landmarks (counted
        and logged once). Frames are decoded and reconstructed in batches, so memory does not grow
        with the video length. Rotation metadata (phone videos) is applied.

        Args:
            video: path of a video file.
            config: stage options (``preprocess``, ``detector``, ``face_index``).
            batch_size: frames per reconstruction batch.
            max_frames: stop after this many frames (None = all).
            progress: optional ``(frames_done, frames_total)`` callback (total 0 if unknown).

        Returns:
            (coeffs (N, 70) float32 [exp, angle, trans] per frame, the video's frame rate).

        Raises:
            InvalidImageError: unreadable video, or one without frames.
            NoFaceDetectedError: no face (or not that many faces) in the first frame.
        """
        cfg = config or ExtractConfig()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None; got {max_frames}.")
        rows: list[np.ndarray] = []
        info: CropInfo | None = None
        last_lm: np.ndarray | None = None
        frames: list[np.ndarray] = []
        lms: list[np.ndarray] = []
        missed = 0
        fps, total = video_info(video)
        if max_frames is not None:
            total = min(total, max_frames) if total else max_frames
        det = self.detector(cfg.detector)

        def flush():
            if frames:
                _, row, _ = self._reconstruct(frames, lms)
                rows.append(row[:, :70])
                frames.clear()
                lms.clear()
                if progress is not None:
                    progress(sum(len(r) for r in rows), total)

        for i, rgb in enumerate(read_frames(video, max_frames)):
            h, w = rgb.shape[:2]
            if i == 0:
                lm0, _ = self._landmarks(
                    rgb, cfg, f"first frame of reference video '{Path(video).name}'"
                )
                if cfg.preprocess != "resize":
                    info = compute_crop_info(lm0, (w, h), extended=cfg.preprocess.startswith("ext"))
                last_lm = _frame_from_original(lm0, info, (w, h), cfg.size)
            crop = apply_crop(rgb, info) if info is not None else rgb
            frame = resize_square(crop, cfg.size)
            found = _nearest_face(
                detect_faces(frame, det, max_side=cfg.max_detect_side),
                last_lm,
                cfg.max_track_shift,
            )
            if found is not None:
                last_lm = found
            else:
                missed += 1
            frames.append(frame)
            lms.append(last_lm)
            if len(frames) >= batch_size:
                flush()
        flush()
        if not rows:
            raise InvalidImageError(f"Reference video '{video}' has no decodable frames.")
        if missed:
            log.warning(
                "no face in %d frame(s) of %s; reused the previous landmarks",
                missed,
                Path(video).name,
            )
        return np.concatenate(rows, axis=0), fps
