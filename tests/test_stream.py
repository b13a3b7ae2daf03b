"""Live streaming (sadtalker_core/stream/): the streamed clip equals the offline clip.

Coefficients are compared for many chunkings and rates (cheap); frames for one short clip and
for the first batch of a cancelled stream (a 256 px frame costs seconds on a CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sadtalker_core import SadTalkerPipeline
from sadtalker_core.coeffs.generate import CoeffModels, generate_coeffs
from sadtalker_core.config import CoeffConfig, ExtractConfig, PipelineConfig, RenderConfig
from sadtalker_core.errors import CancelledError, InvalidAudioError, OptionError
from sadtalker_core.stream import (
    BLINK_LOOKAHEAD_MS,
    COEFF_TOLERANCE,
    FRAME_TOLERANCE,
    MEL_LOOKAHEAD_MS,
    RESAMPLE_DELAY_MS,
    CoeffStream,
    lookahead_ms,
)


@pytest.fixture(scope="module")
def models(weights_dir):
    return CoeffModels.load(weights_dir, 256, "cpu")


@pytest.fixture(scope="module")
def src_row():
    return (np.random.default_rng(1).standard_normal(70) * 0.1).astype(np.float32)


def speech(fixtures_dir, name: str, seconds: float | None = None, offset: float = 0.0):
    """(samples, rate) of a fixture, ``seconds`` long from ``offset`` (looped when longer)."""
    x, rate = sf.read(str(fixtures_dir / name), dtype="float32")
    if seconds is not None:
        n = int(round(seconds * rate))
        x = np.concatenate([x] * (1 + n // len(x)))[int(offset * rate) :][:n]
    return x, rate


def streamed_rows(src, x, rate, cfg, models, chunk_ms, step_frames=8):
    """All rows of a CoeffStream fed ``chunk_ms`` pieces, and the audio it hands out."""
    n = max(1, int(rate * chunk_ms / 1000))
    stream = CoeffStream(src, rate, cfg, models=models, step_frames=step_frames)
    parts = [stream.push(x[i : i + n]) for i in range(0, len(x), n)]
    parts.append(stream.finish())
    return np.concatenate(parts), stream.audio(0, stream.audio_samples)


@pytest.mark.parametrize(
    "name, seconds, chunk_ms, cfg",
    [
        # 6.5 s * 25 fps = 163 frames >= 140: the blink schedule is the offline one
        ("speech_48k_mono.wav", 6.5, 37, CoeffConfig(seed=3)),
        ("speech_48k_mono.wav", 6.5, 1000, CoeffConfig(seed=4, fps=30.0)),
        ("speech_44k_stereo.wav", 6.0, 1, CoeffConfig(seed=5, still=True)),
        ("RD_Radio31_000.wav", 6.0, 37, CoeffConfig(seed=6, pose_style=7, expression_scale=1.3)),
        # short clips: equal without random blinks
        ("speech_22k_mono.wav", 1.5, 1000, CoeffConfig(seed=7, blink=False)),
    ],
)
def test_streamed_coefficients_equal_offline(
    fixtures_dir, models, src_row, name, seconds, chunk_ms, cfg
):
    x, rate = speech(fixtures_dir, name, seconds)
    offline = generate_coeffs(src_row, (x, rate), cfg, models=models)
    rows, audio = streamed_rows(src_row, x, rate, cfg, models, chunk_ms)
    assert rows.shape == offline.coeffs.shape  # round(seconds * fps) frames
    assert np.abs(rows - offline.coeffs).max() <= COEFF_TOLERANCE
    np.testing.assert_array_equal(audio, offline.audio)


def test_every_step_size_gives_the_same_rows(fixtures_dir, models, src_row):
    """16 kHz in 1 ms pieces, the networks run after every frame of speech."""
    cfg = CoeffConfig(seed=2, blink=False)
    x, rate = speech(fixtures_dir, "RD_Radio31_000.wav", 1.0, offset=2.0)  # 16 kHz stereo
    offline = generate_coeffs(src_row, (x, rate), cfg, models=models)
    rows, _ = streamed_rows(src_row, x, rate, cfg, models, 1, step_frames=1)
    assert rows.shape == offline.coeffs.shape == (25, 70)  # 1 s * 25 fps
    assert np.abs(rows - offline.coeffs).max() <= COEFF_TOLERANCE


@pytest.mark.parametrize("still", [True, False])
def test_rows_arrive_within_the_documented_lookahead(fixtures_dir, models, src_row, still):
    """Row i is out once (i + 1) frames + the lookahead of speech have arrived (10 ms pieces)."""
    cfg = CoeffConfig(seed=1, still=still)
    x, rate = speech(fixtures_dir, "speech_48k_mono.wav", 3.0)
    stream = CoeffStream(src_row, rate, cfg, models=models)
    n = rate // 100
    arrival = []  # ms of speech received when each row came out
    for i in range(0, len(x), n):
        arrival += [1000.0 * (i + n) / rate] * stream.push(x[i : i + n]).shape[0]
    assert len(arrival) > 0
    # coefficients wait for the mel window (+ the PoseVAE chunk and smoothing); the renderer's
    # 13 frames come on top (lookahead_ms)
    if still:  # the mel window, or a blink's end
        wait = max(MEL_LOOKAHEAD_MS, BLINK_LOOKAHEAD_MS - 40.0)
    else:
        wait = lookahead_ms(False)[1] - 13 * 40.0
    wait += RESAMPLE_DELAY_MS + 10.0  # + one 10 ms piece
    for i, ms in enumerate(arrival):
        assert ms <= (i + 1) * 40.0 + wait, i
    assert lookahead_ms(True) == (632.5, 740.0)  # 13 frames * 40 ms + 112.5 ms (220 ms)
    assert lookahead_ms(False) == (872.5, 2112.5)  # + 6 smoothing (+ 31 chunk) frames


def test_stream_refuses_what_it_cannot_honour(models, src_row):
    with pytest.raises(OptionError, match="idle_seconds does not apply to a stream"):
        CoeffStream(src_row, 16000, CoeffConfig(idle_seconds=2.0), models=models)
    with pytest.raises(OptionError, match="input_yaw is not supported in a stream"):
        CoeffStream(src_row, 16000, CoeffConfig(input_yaw=(0.0, 20.0)), models=models)
    stream = CoeffStream(src_row, 16000, CoeffConfig(), models=models)
    with pytest.raises(InvalidAudioError, match="NaN or infinite"):
        stream.push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(InvalidAudioError, match=r"\(n,\) mono or \(n, channels\)"):
        stream.push(np.zeros((2, 3, 4), np.float32))
    stream.push(np.zeros(100, np.int16))
    with pytest.raises(InvalidAudioError, match="shorter than one video frame"):
        stream.finish()


# --------------------------------------------------------------------------------------------
# Frames


@pytest.fixture(scope="module")
def pipe(weights_dir):
    return SadTalkerPipeline(weights_dir, "cpu")


def config(**coeffs) -> PipelineConfig:
    return PipelineConfig(
        extract=ExtractConfig(preprocess="crop", size=256, detector="dlib"),
        coeffs=CoeffConfig(**coeffs),
        render=RenderConfig(batch_size=2, precision="fp32"),
    )


@pytest.fixture(scope="module")
def face(pipe, fixtures_dir):
    return pipe.extract(fixtures_dir / "people_0.png", config())


def test_streamed_frames_equal_offline(pipe, face, fixtures_dir):
    """A 5-frame clip at 44.1 kHz in 37 ms pieces: the same frames and audio as offline."""
    cfg = config(seed=9)
    x, rate = speech(fixtures_dir, "speech_44k_stereo.wav", 0.2, offset=1.0)  # 5 frames
    coeffs = pipe.coefficients(face, (x, rate), cfg)
    offline = np.concatenate(list(pipe.iter_frames(face, coeffs, cfg)))
    n = int(rate * 0.037)
    batches = list(pipe.stream(face, ((x[i : i + n], rate) for i in range(0, len(x), n)), cfg))
    assert [(b.start, b.stop) for b in batches] == [(0, 2), (2, 4), (4, 5)]  # batch_size 2
    assert [b.final for b in batches] == [False, False, True]
    frames = np.concatenate([b.frames for b in batches])
    assert frames.shape == offline.shape
    assert np.abs(frames.astype(np.int16) - offline).max() <= FRAME_TOLERANCE
    np.testing.assert_array_equal(np.concatenate([b.audio for b in batches]), coeffs.audio)
    assert batches[-1].t1 == pytest.approx(0.2)


def test_cancel_stops_at_the_next_batch(pipe, face, fixtures_dir):
    """The first batch comes while speech is still arriving; a cancel then stops the stream
    before the next batch, and no more audio is read."""
    cfg = config(seed=3, still=True)
    x, rate = speech(fixtures_dir, "speech_48k_mono.wav", 2.0)
    n = rate // 10  # 100 ms pieces
    sent = []

    def chunks():
        for i in range(0, len(x), n):
            sent.append(i)
            yield x[i : i + n], rate

    cancel = []
    stream = pipe.stream(face, chunks(), cfg, should_cancel=lambda: bool(cancel))
    first = next(stream)
    assert (first.start, first.stop, first.final) == (0, 2, False)
    heard = (sent[-1] + n) / rate
    assert heard <= 1.0  # 2 frames + 13 + the mel lookahead: 0.7525 s, read in 0.1 s pieces
    cancel.append(True)
    with pytest.raises(CancelledError, match="Streaming cancelled after 2 frames"):
        next(stream)
    assert len(sent) < len(range(0, len(x), n))  # the rest of the speech was never read

    coeffs = pipe.coefficients(face, (x, rate), cfg)
    offline = next(iter(pipe.iter_frames(face, coeffs, cfg)))
    assert np.abs(first.frames.astype(np.int16) - offline).max() <= FRAME_TOLERANCE


def test_reference_video_rows_stream_as_offline(fixtures_dir, models, src_row):
    """ref_eyeblink / ref_pose rows (tiled over the clip) give the offline rows too."""
    rng = np.random.default_rng(4)
    ref_blink = (rng.standard_normal((37, 70)) * 0.1).astype(np.float32)
    ref_pose = (rng.standard_normal((23, 70)) * 0.05).astype(np.float32)
    cfg = CoeffConfig(seed=8, head_motion_scale=0.7)
    x, rate = speech(fixtures_dir, "speech_22k_mono.wav", 2.0)  # 50 frames: 1 chunk + 17
    offline = generate_coeffs(
        src_row, (x, rate), cfg, models=models, ref_eyeblink=ref_blink, ref_pose=ref_pose
    )
    stream = CoeffStream(
        src_row, rate, cfg, models=models, ref_eyeblink=ref_blink, ref_pose=ref_pose
    )
    n = rate // 4
    rows = [stream.push(x[i : i + n]) for i in range(0, len(x), n)] + [stream.finish()]
    rows = np.concatenate(rows)
    assert rows.shape == offline.coeffs.shape == (50, 70)  # 2 s * 25 fps
    assert np.abs(rows - offline.coeffs).max() <= COEFF_TOLERANCE
