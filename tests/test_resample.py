"""Resampling as the official model hears it: resampy kaiser_best in numpy, file/array parity."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sadtalker_core.audio import (
    crop_or_pad,
    load_speech,
    melspectrogram,
    num_frames,
)
from sadtalker_core.errors import InvalidAudioError
from sadtalker_core.io.audio import load_audio
from sadtalker_core.io.resample import (
    KAISER_BEST,
    SincFilter,
    StreamingResampler,
    resample,
    resampled_length,
    sinc_table,
)

FIXTURES = ["speech_22k_mono", "speech_44k_stereo", "speech_48k_mono"]
WAV_ATOL = 1e-5  # issue #16: waveform vs the official 16 kHz waveform
MEL_ATOL = 1e-4  # issue #16: normalised mel (range -4..4)
CHUNK_ATOL = 1e-7  # chunked vs one pass: float rounding only


def _shipped_kaiser_best() -> dict[str, np.ndarray]:
    """resampy's shipped filter table, read without importing resampy (numba) itself."""
    spec = importlib.util.find_spec("resampy")
    assert spec is not None, "resampy (test-only dependency) is missing: see requirements-test.txt"
    folder = Path(next(iter(spec.submodule_search_locations)))
    with np.load(folder / "data" / "kaiser_best.npz") as data:
        return {k: data[k] for k in data.files}


def _speechlike(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated noise plus tones: broadband like speech, with energy near Nyquist."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    tones = 0.2 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * np.sin(2 * np.pi * 7900.0 * t)
    return (0.2 * envelope * rng.standard_normal(n) + tones).astype(np.float32)


# --------------------------------------------------------------------------- filter


def test_filter_table_is_resampys_shipped_table():
    shipped = _shipped_kaiser_best()
    table = sinc_table()
    # 50 zero crossings x 2**13 steps + 1 = 409601 entries, rebuilt bit for bit.
    assert table.shape == shipped["half_window"].shape == (409601,)
    assert int(shipped["precision"]) == KAISER_BEST.steps_per_crossing == 8192
    assert float(shipped["rolloff"]) == KAISER_BEST.rolloff
    np.testing.assert_array_equal(table, shipped["half_window"])
    # The parameters as resampy's docs print them (rounded) give the same table to 1e-8.
    rounded = SincFilter(zero_crossings=50, precision=13, beta=12.9846, rolloff=0.917347)
    assert np.abs(sinc_table(rounded) - shipped["half_window"]).max() < 1e-6
    assert not table.flags.writeable


def test_matches_resampy_on_hard_rates():
    import resampy  # test-only dependency (needs numba); the library never imports it

    # 16850 Hz: float64 output times fall just below exact integers (resampy then takes the
    # sample before with frac = 1); 44099 Hz: no short period, weights per output sample.
    for rate, seconds in ((16850, 10.0), (44099, 1.0), (8000, 1.0)):
        x = _speechlike(seconds, rate, seed=rate)
        ref = resampy.resample(x, rate, 16000, filter="kaiser_best")
        ours = resample(x, rate, 16000)
        assert ours.shape == (resampled_length(len(x), rate, 16000),)
        # Same weights and the same float32 running sum: equal up to a few float32 ulps.
        np.testing.assert_allclose(ours[: len(ref)], ref, atol=1e-7, rtol=0)
        assert not ours[len(ref) :].any()  # librosa's fix_length pads zeros


# --------------------------------------------------------------------------- official goldens


@pytest.mark.parametrize("name", FIXTURES)
def test_files_match_official_16k(name: str, fixtures_dir: Path, golden):
    ref = golden("audio_resample")
    path = fixtures_dir / f"{name}.wav"
    wav = load_speech(path)
    expected = ref[f"{name}/wav16k"]
    assert wav.dtype == np.float32
    info = sf.info(str(path))
    # ceil(121493 * 16000 / 22050) = ceil(88158.19) = 88159 samples (same for the others)
    assert wav.shape == expected.shape == (math.ceil(info.frames * 16000 / info.samplerate),)
    assert np.abs(wav - expected).max() < WAV_ATOL
    # resampy's float32 accumulation order is reproduced, so only rare 1-ulp differences remain
    # (a float64 sum would be ~6e-7 off and push quiet mel bands past 1e-4).
    assert np.abs(wav - expected).max() <= 1e-7
    frames = num_frames(len(wav))  # int(88159 / 640) = 137 video frames
    assert frames == int(ref[f"{name}/num_frames"]) == 137
    cropped = crop_or_pad(wav, frames)  # 137 * 640 = 87680 samples
    np.testing.assert_allclose(cropped, ref[f"{name}/wav16k_cropped"], atol=WAV_ATOL, rtol=0)
    mel = melspectrogram(cropped)
    assert mel.shape == ref[f"{name}/mel"].shape == (439, 80)  # 1 + 87680 // 200 frames
    assert mel.dtype == np.float32
    assert np.abs(mel - ref[f"{name}/mel"]).max() < MEL_ATOL
    clip = load_audio(str(path))
    np.testing.assert_array_equal(clip.waveform, wav)
    assert clip.duration == info.frames / info.samplerate


@pytest.mark.parametrize("name", FIXTURES)
def test_arrays_match_official_16k(name: str, fixtures_dir: Path, golden):
    expected = golden("audio_resample")[f"{name}/wav16k"]
    data, rate = sf.read(str(fixtures_dir / f"{name}.wav"), dtype="float32")  # (N,) or (N, C)
    inputs = [(data, rate), (data.T.copy(), rate), (torch.from_numpy(data.copy()), rate)]
    channels_first = torch.from_numpy(data.T.copy() if data.ndim == 2 else data[None].copy())
    inputs.append((channels_first, rate))  # (C, N): what a host adapter hands over
    for source in inputs:
        wav = load_speech(source)
        assert wav.shape == expected.shape
        assert np.abs(wav - expected).max() < WAV_ATOL
    pcm = sf.read(str(fixtures_dir / f"{name}.wav"), dtype="int16")[0]
    if name != "speech_48k_mono":  # PCM16 files: int16 arrays are scaled by 1 / 32768
        assert np.abs(load_speech((pcm, rate)) - expected).max() < WAV_ATOL


def test_16k_is_not_resampled(fixtures_dir: Path, golden):
    ref = golden("audio")
    wav = load_speech(fixtures_dir / "RD_Radio31_000.wav")  # 16 kHz stereo int16
    np.testing.assert_array_equal(wav, ref["wav"])
    mel = melspectrogram(crop_or_pad(wav, num_frames(len(wav))))
    assert mel.shape == (641, 80)  # 8 s: 1 + 128000 // 200
    assert np.abs(mel - ref["mel_f64"]).max() < 1e-5
    x = _speechlike(0.5, 16000)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
    np.testing.assert_array_equal(load_speech(x, sample_rate=16000), x)


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("rate", [48000, 44100, 22050, 16850, 44099])
def test_chunked_equals_one_pass(rate: int):
    seconds = 1.5 if rate == 44099 else 40.0  # 44099 Hz takes the slower per-sample path
    x = _speechlike(seconds, rate, seed=1)
    whole = resample(x, rate)
    rng = np.random.default_rng(rate)
    stream = StreamingResampler(rate, 16000)
    parts, i, most_held = [], 0, 0
    while i < len(x):
        size = int(rng.choice([1, 7, 441, 1024, 30000, 250000]))
        parts.append(stream.push(x[i : i + size]))
        most_held = max(most_held, stream.buffered_samples - size)
        i += size
    parts.append(stream.finish())
    chunked = np.concatenate(parts)
    assert chunked.shape == whole.shape == (resampled_length(len(x), rate, 16000),)
    assert np.abs(chunked - whole).max() <= CHUNK_ATOL
    assert stream.samples_in == len(x) and stream.samples_out == len(whole)
    # Memory is bounded: besides the chunk just pushed, at most one batch of input is held.
    assert most_held < 270000, most_held  # 262144-sample batch + one filter window


def test_lengths_and_edges():
    # ceil(n * 16000 / rate); the last sample is a zero when n * 16000 / rate is fractional.
    for rate in (8000, 22050, 44100, 48000, 96000):
        for n in (1, 2, 3, 440, 441, 1000, 48001):
            assert resampled_length(n, rate, 16000) == math.ceil(n * 16000 / rate)
    y = resample(np.ones(48001, np.float32), 48000)
    assert y.shape == (16001,) and y[-1] == 0.0 and y[-2] != 0.0
    # DC passes with unit gain away from the edges (the filter is scaled when stretched).
    assert np.abs(y[200:-200] - 1.0).max() < 1e-3
    assert resample(np.ones(2, np.float32), 48000).tolist() == [0.0]  # nothing to interpolate
    assert resample(np.zeros(0, np.float32), 44100).shape == (0,)


def test_errors():
    with pytest.raises(ValueError, match="must be positive"):
        StreamingResampler(0, 16000)
    with pytest.raises(ValueError, match=r"mono signal of shape \(N,\)"):
        resample(np.zeros((2, 100), np.float32), 44100)
    stream = StreamingResampler(44100)
    with pytest.raises(ValueError, match="Chunks must be mono"):
        stream.push(np.zeros((10, 2), np.float32))
    stream.finish()
    with pytest.raises(RuntimeError, match="push after finish"):
        stream.push(np.zeros(10, np.float32))
    with pytest.raises(RuntimeError, match="finish called twice"):
        stream.finish()
    with pytest.raises(InvalidAudioError, match="needs its sample rate"):
        load_speech(np.zeros(100, np.float32))


def test_streamed_file_equals_array(tmp_path: Path):
    # A 30 s 44.1 kHz stereo FLAC decodes in ~1k-sample frames that stream through the
    # resampler; the result equals the one-pass resampling of the decoded array.
    x = np.stack([_speechlike(30.0, 44100, seed=3), _speechlike(30.0, 44100, seed=4)], axis=1)
    path = tmp_path / "long.flac"
    sf.write(str(path), 0.5 * x, 44100, subtype="PCM_16")
    data = sf.read(str(path), dtype="float32")[0]  # (N, 2), int16 / 32768
    from_file = load_speech(path)
    assert from_file.shape == (math.ceil(len(data) * 16000 / 44100),)  # 480000 samples
    np.testing.assert_array_equal(from_file, load_speech((data, 44100)))
