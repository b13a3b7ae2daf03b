"""The one frame loop of every host: ``SadTalkerPipeline.iter_frames`` reports progress and
hands each finished batch to ``on_batch`` before yielding it, takes an external background
upscaler only together with an enhancer, and ``FaceEnhancer.iter_enhance`` (frames from
anywhere) reports progress per batch and stops at the next batch on cancel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sadtalker_core.config import (
    CoeffConfig,
    EnhanceConfig,
    ExtractConfig,
    PipelineConfig,
    RenderConfig,
)
from sadtalker_core.enhance.upscale import BackgroundUpscaler, load_upscaler
from sadtalker_core.errors import CancelledError, OptionError
from sadtalker_core.pipeline import SadTalkerPipeline


@pytest.fixture(scope="module")
def pipe(weights_dir, restorer_dir):
    return SadTalkerPipeline([weights_dir, restorer_dir], "cpu")


@pytest.fixture(scope="module")
def face_and_coeffs(pipe, fixtures_dir):
    config = PipelineConfig(
        extract=ExtractConfig(detector="dlib"), coeffs=CoeffConfig(idle_seconds=0.12)
    )  # idle mode: 0.12 s x 25 fps = 3 frames, no audio needed
    face = pipe.extract(
        np.asarray(Image.open(fixtures_dir / "people_0.png").convert("RGB")), config
    )
    return face, pipe.coefficients(face, None, config)


def test_progress_then_hook_then_the_batch(pipe, face_and_coeffs):
    face, coeffs = face_and_coeffs
    events: list = []
    frames = pipe.iter_frames(
        face,
        coeffs,
        PipelineConfig(render=RenderConfig(batch_size=2)),
        progress=lambda done, total: events.append(("progress", done, total)),
        on_batch=lambda batch, done, total: events.append(("batch", len(batch), done, total)),
    )
    for batch in frames:
        events.append(("yielded", len(batch)))
    assert events == [  # 3 frames in batches of 2: reported before each batch is handed over
        ("progress", 2, 3),
        ("batch", 2, 2, 3),
        ("yielded", 2),
        ("progress", 3, 3),
        ("batch", 1, 3, 3),
        ("yielded", 1),
    ]


def test_external_upscaler_needs_the_enhancer(pipe, face_and_coeffs, realesrgan_file):
    face, coeffs = face_and_coeffs
    upscaler = BackgroundUpscaler(load_upscaler(realesrgan_file))
    with pytest.raises(OptionError, match="background_enhancer works together with enhancer"):
        next(pipe.iter_frames(face, coeffs, PipelineConfig(), upscaler=upscaler))


def test_iter_enhance_progress_and_cancel(pipe):
    enhancer = pipe.enhancer(EnhanceConfig("gfpgan", upscale=2, detector="dlib"))
    blank = [np.full((2, 32, 48, 3), 90, np.uint8), np.full((1, 32, 48, 3), 90, np.uint8)]
    seen: list = []
    out = list(
        enhancer.iter_enhance(
            iter(blank),
            3,
            progress=lambda done, total: seen.append((done, total)),
            on_batch=lambda batch, done, total: seen.append(batch.shape),
        )
    )
    assert seen == [(2, 3), (2, 64, 96, 3), (3, 3), (1, 64, 96, 3)]  # no face: enlarged only
    assert [b.shape for b in out] == [(2, 64, 96, 3), (1, 64, 96, 3)]

    calls = iter([False, True])
    with pytest.raises(CancelledError, match="after 2 of 3 frames"):
        list(enhancer.iter_enhance(iter(blank), 3, should_cancel=lambda: next(calls)))
