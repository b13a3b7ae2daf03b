"""Checking a run's input files before any network loads: a wrong path or a file of the wrong
kind is reported in a fraction of a second, not after face detection and model loading.

Only files are probed (their header and first audio packet); pictures, waveforms and
coefficient rows given as arrays are already in memory and are checked where they are used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InvalidAudioError, InvalidImageError, InvalidVideoError

COEFF_SUFFIXES = (".npz", ".mat")  # reference motion given as coefficient rows


def _path(value: Any) -> Path | None:
    return Path(value).expanduser() if isinstance(value, (str, os.PathLike)) else None


def check_image_file(image: Any) -> None:
    """A path ``image`` must name a picture PIL can identify (other inputs pass).

    Raises:
        InvalidImageError: missing, a folder, empty, or not a picture.
    """
    path = _path(image)
    if path is None:
        return
    if not path.is_file():
        what = "is a folder, not a picture" if path.is_dir() else "does not exist"
        raise InvalidImageError(f"Source image {path} {what}. Check the path.")
    if path.stat().st_size == 0:
        raise InvalidImageError(f"Source image {path} is empty (0 bytes).")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(
            f"Source image {path} cannot be decoded ({type(e).__name__}: {e}). The "
            "file is corrupt or not an image; re-export it as PNG or JPEG."
        ) from e


def check_audio_file(audio: Any, what: str = "Audio") -> None:
    """A path ``audio`` must hold a decodable audio track (an audio file or a video with
    sound); other inputs (arrays, ``(samples, rate)``) pass.

    Raises:
        InvalidAudioError: missing, a folder, not a media file, no audio track, or its first
            audio packets do not decode.
    """
    path = _path(audio)
    if path is None:
        return
    if not path.is_file():
        what_is = " (it is a folder)" if path.is_dir() else ""
        raise InvalidAudioError(f"{what} file not found: {path}{what_is}. Check the path.")
    import av

    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise InvalidAudioError(
            f"Could not read audio from {path.name} ({getattr(e, 'strerror', None) or e}). The "
            "file is damaged or not an audio/video format; re-export it (e.g. as WAV or MP3)."
        ) from e
    with container:
        if not container.streams.audio:
            kinds = ", ".join(s.type for s in container.streams) or "no streams"
            raise InvalidAudioError(
                f"{path.name} has no audio track (it holds: {kinds}). Give a speech file (wav, "
                "mp3, flac, ogg, m4a) or a video with sound."
            )
        stream = container.streams.audio[0]
        try:
            for packet in container.demux(stream):
                if packet.size and packet.decode():
                    return  # one decoded frame: the codec reads this file
        except av.FFmpegError as e:
            raise InvalidAudioError(
                f"Could not decode the audio of {path.name} ({getattr(e, 'strerror', None) or e})."
                " The file is damaged; re-export it."
            ) from e
    raise InvalidAudioError(
        f"{path.name} holds no decodable audio samples (corrupt or empty audio track). "
        "Re-export the file."
    )


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
