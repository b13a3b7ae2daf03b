"""Checking a run's input files before any network loads: a wrong path or a file of the wrong
kind is reported in a fraction of a second, not after face detection and model loading.

Only files are probed (their header and first audio packet); pictures, waveforms and
coefficient rows given as arrays are already in memory and are checked where they are used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InvalidVideoError
from .audio import probe_audio
from .image import probe_image

COEFF_SUFFIXES = (".npz", ".mat")  # reference motion given as coefficient rows


def _path(value: Any) -> Path | None:
    return Path(value).expanduser() if isinstance(value, (str, os.PathLike)) else None


def check_image_file(image: Any) -> None:
    """A path ``image`` must name a picture PIL can identify (other inputs pass).

    Raises:
        InvalidImageError: missing, a folder, empty, or not a picture.
    """
    path = _path(image)
    if path is not None:
        probe_image(path)


def check_audio_file(audio: Any, what: str = "Audio") -> None:
    """A path ``audio`` must hold a decodable audio track (an audio file or a video with
    sound); other inputs (arrays, ``(samples, rate)``) pass.

    Raises:
        InvalidAudioError: missing, a folder, not a media file, no audio track, or its first
            audio packets do not decode.
    """
    path = _path(audio)
    if path is not None:
        probe_audio(path, what)


def check_reference(reference: Any, option: str) -> None:
    """A path given for a reference motion (``ref_pose`` / ``ref_eyeblink``) must be a
    coefficient file (.npz / .mat) or a video with a picture track; arrays pass.

    Raises:
        InvalidVideoError: missing, unreadable, or a file without video.
    """
    path = _path(reference)
    if path is None:
        return
    if not path.is_file():
        raise InvalidVideoError(f"{option}: {path} does not exist. Check the path.")
    if path.suffix.lower() in COEFF_SUFFIXES:
        return
    import av

    try:
        with av.open(str(path), mode="r") as container:
            has_video = bool(container.streams.video)
    except av.FFmpegError as e:
        raise InvalidVideoError(
            f"{option}: {path.name} cannot be read as a video "
            f"({getattr(e, 'strerror', None) or e}); give a video of a face, or a coefficient "
            ".npz / .mat file."
        ) from e
    if not has_video:
        raise InvalidVideoError(
            f"{option}: {path.name} has no video track; give a video of a face, or a "
            "coefficient .npz / .mat file."
        )


def check_inputs(
    source_image: Any = None,
    driven_audio: Any = None,
    ref_eyeblink: Any = None,
    ref_pose: Any = None,
) -> None:
    """Check every input file of a run (the ones given as paths) before any network loads.

    Every host calls it first: :meth:`SadTalkerPipeline.run`, the command line (each clip of a
    batch) and the A1111 tab and API. Takes well under a second (headers and the first audio
    packet only).

    Raises:
        InvalidImageError, InvalidAudioError, InvalidVideoError: the first bad input, named
            with what to do (all ``SadTalkerError``; a host answers them as the caller's fault).
    """
    check_image_file(source_image)
    check_audio_file(driven_audio)
    check_reference(ref_eyeblink, "ref_eyeblink")
    check_reference(ref_pose, "ref_pose")
