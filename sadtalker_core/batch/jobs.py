"""A batch's job list (image, audio, output) and the per-clip result every engine returns."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..errors import SadTalkerError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {
    ".wav",
    ".mp3",
    ".flac",
    ".ogg",
    ".m4a",
    ".aac",
    ".opus",
    ".mp4",
    ".mov",
    ".mkv",
    ".webm",
}

DONE, FAILED, SKIPPED = "done", "failed", "skipped"


class Job(NamedTuple):
    """One clip: picture + speech (None: idle motion) -> output MP4. Equal to a plain tuple."""

    image: Path
    audio: Path | None
    output: Path

    @property
    def clip(self) -> str:
        """The clip's name in the manifest: its output path (unique within a batch)."""
        return str(self.output)


@dataclass
class ClipResult:
    """What became of one clip (one manifest line, without ``data``).

    status: ``done`` | ``failed`` | ``skipped`` (done by an earlier run); seconds: wall time of
    the last attempt; frames/bytes: of the written video; attempts: tries so far (a retry after
    a failure or a lost worker counts); worker: who rendered it; face: where its Face came from
    (``extracted`` | ``memory`` | ``disk`` | ``shared``); data: the MP4 bytes when the worker
    returns them to the driver instead of writing the file.
    """

    clip: str
    status: str
    output: str
    image: str = ""
    audio: str = ""
    error: str = ""
    seconds: float = 0.0
    frames: int = 0
    bytes: int = 0
    attempts: int = 1
    worker: str = ""
    face: str = ""
    data: bytes | None = field(default=None, repr=False)

    def record(self) -> dict:
        """The manifest line (JSON-ready; no video bytes)."""
        out = asdict(self)
        out.pop("data")
        return out

    @classmethod
    def failure(cls, job: Job, error: str, **fields) -> ClipResult:
        return cls(
            job.clip, FAILED, str(job.output), str(job.image), str(job.audio or ""), error, **fields
        )


def read_jobs(batch: Path, result_dir: Path) -> list[Job]:
    """The clips of ``--batch``.

    ``batch`` a folder: every picture with an audio file of the same stem (``anna.png`` +
    ``anna.wav``) -> ``<result_dir>/anna.mp4``. ``batch`` a CSV: one ``image,audio[,output]`` row
    per clip (a header row and ``#`` lines are skipped); relative paths, the output's included,
    are relative to the CSV's folder; without an output ->
    ``<result_dir>/<image stem>__<audio stem>.mp4``.

    Raises:
        SadTalkerError: the file is missing, a row is malformed, or no clip was found.
    """
    if batch.is_dir():
        files = sorted(p for p in batch.iterdir() if p.is_file())
        audio = {p.stem: p for p in files if p.suffix.lower() in AUDIO_SUFFIXES}
        jobs = [
            Job(img, audio[img.stem], result_dir / f"{img.stem}.mp4")
            for img in files
            if img.suffix.lower() in IMAGE_SUFFIXES and img.stem in audio
        ]
    else:
        jobs = []
        if not batch.is_file():
            raise SadTalkerError(f"Batch file not found: {batch}.")
        here = batch.expanduser().absolute().parent
        with open(batch, newline="") as f:
            for line, row in enumerate(csv.reader(f), 1):
                if (
                    not row
                    or row[0].strip().lower() in ("image", "source_image")
                    or row[0].startswith("#")
                ):
                    continue
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise SadTalkerError(
                        f"Line {line} of {batch} must be image,audio[,output]; got {row}."
                    )
                # Every relative path of the CSV is relative to the CSV's folder.
                img, aud = (here / row[0].strip(), here / row[1].strip())
                out = here / row[2].strip() if len(row) > 2 and row[2].strip() else None
                jobs.append(Job(img, aud, out or result_dir / f"{img.stem}__{aud.stem}.mp4"))
    if not jobs:
        raise SadTalkerError(f"No (image, audio) pairs found in {batch}.")
    outputs = [j.output for j in jobs]
    if len(set(outputs)) != len(outputs):
        twice = sorted({str(o) for o in outputs if outputs.count(o) > 1})
        raise SadTalkerError(
            f"{batch}: several clips write the same output ({', '.join(twice)}); give each row "
            "its own output column."
        )
    return jobs


def default_manifest(batch: Path) -> Path:
    """Where a batch's manifest goes without ``--manifest``: beside the CSV (``jobs.csv`` ->
    ``jobs.manifest.jsonl``) or beside the folder (``inputs/`` -> ``inputs.manifest.jsonl``)."""
    batch = batch.expanduser().absolute()
    name = batch.name if batch.is_dir() else batch.stem
    return batch.parent / f"{name}.manifest.jsonl"
