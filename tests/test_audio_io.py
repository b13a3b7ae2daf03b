"""Audio in: files (wav/flac/mp3/ogg/m4a/mp4 track), arrays with their rate -> 16 kHz mono."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from _support import espeak
from scipy.io import wavfile
from scipy.signal import resample_poly

from sadtalker_core.coeffs.generate import frame_counts
from sadtalker_core.errors import InvalidAudioError
from sadtalker_core.io.audio import AudioClip, check_min_duration, check_speech, load_audio

DURATION = 2.48  # s; an integer number of samples at 8, 16, 22.05, 44.1 and 48 kHz
N16 = 39680  # 2.48 s * 16000 Hz
SPEECH = "Hello there. This sentence drives the talking head, with clear speech."


def _write_av(
    path: Path, data: np.ndarray, rate: int, codec: str, fmt: str | None = None, video: bool = False
) -> None:
    """Encode ``data`` ((N,) or (N, 2) float in [-1, 1]) with PyAV (no system ffmpeg needed)."""
    with av.open(str(path), "w", format=fmt) as c:
        if video:
            v = c.add_stream("mpeg4", rate=25)
            v.width = v.height = 32
            v.pix_fmt = "yuv420p"
        s = c.add_stream(codec, rate=rate)
        s.layout = "stereo" if data.ndim == 2 else "mono"
        if video:
            black = np.zeros((32, 32, 3), np.uint8)
            for _ in range(int(DURATION * 25)):
                for p in v.encode(av.VideoFrame.from_ndarray(black, format="rgb24")):
                    c.mux(p)
            for p in v.encode(None):
                c.mux(p)
        formats = [f.name for f in s.codec_context.codec.audio_formats]
        planar = np.ascontiguousarray((data.T if data.ndim == 2 else data[None]).astype(np.float32))
        step = s.codec_context.frame_size or 1024
        for i in range(0, planar.shape[1], step):
            block = planar[:, i : i + step]
            if "fltp" in formats:
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=s.layout.name)
            else:  # packed s16 (libopus)
                pcm = (np.clip(block, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=s.layout.name)
            frame.sample_rate = rate
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict:
    """espeak-ng speech cut to 2.48 s, at 22.05 kHz, plus its independent 16 kHz resample."""
    root = tmp_path_factory.mktemp("speech")
    espeak(root / "espeak.wav", SPEECH)
    x, rate = sf.read(root / "espeak.wav", dtype="float64")
    assert rate == 22050
    start = int(0.1 * rate)  # skip espeak's leading silence
    base = x[start : start + int(round(DURATION * rate))]
    assert len(base) == int(round(DURATION * rate)), "espeak-ng speech shorter than expected"
    return {"root": root, "base": base, "rate": rate, "ref16": resample_poly(base, 320, 441)}


def _at(speech: dict, rate: int) -> np.ndarray:
    return speech["base"] if rate == speech["rate"] else resample_poly(speech["base"], rate, 22050)


def _lag_and_error(wav: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    """Best alignment lag (samples, within +-20) and relative L2 error at lag 0."""
    n = min(len(wav), len(ref)) - 200
    scores = [
        float(np.dot(wav[100 + lag : 100 + lag + n], ref[100 : 100 + n])) for lag in range(-20, 21)
    ]
    m = min(len(wav), len(ref))
    return int(np.argmax(scores)) - 20, float(
        np.linalg.norm(wav[:m] - ref[:m]) / np.linalg.norm(ref[:m])
    )


# Relative error bounds vs scipy's independent resample: PCM differs only by the resampling
# filter and 16-bit rounding; 8 kHz input lacks 4-8 kHz; lossy codecs add coding noise.
# PCM_ERR: relative error against scipy's resample_poly reference. The official resampler
# (resampy kaiser_best, which we reproduce) rolls off at 0.917 x Nyquist, so the 7.3-8 kHz band
# of this speech (~4 % of it) is not kept: 0.039 here, for resampy itself too.
PCM_ERR, BAND_ERR, LOSSY_ERR = 0.045, 0.25, 0.25


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_rates_and_channels(speech, rate: int, channels: int):
    data = _at(speech, rate)
    gain = 1.0
    if channels == 2:
        data = np.stack([data, 0.5 * data], axis=1)  # mono mix = 0.75 * speech
        gain = 0.75
    path = speech["root"] / f"s{rate}_{channels}.wav"
    sf.write(path, data, rate, subtype="PCM_16")
    clip = load_audio(path)
    assert clip.sample_rate == 16000 and clip.waveform.dtype == np.float32
    assert clip.duration == pytest.approx(DURATION, abs=1e-12)
    assert clip.waveform.shape == (N16,)  # 2.48 s * 16 kHz
    lag, err = _lag_and_error(clip.waveform, gain * speech["ref16"])
    assert lag == 0
    assert err < (BAND_ERR if rate == 8000 else PCM_ERR), err
    # 2.48 s -> 62 frames at 25 fps, 74.4 -> 74 at 30 fps
    assert frame_counts(clip.duration, 25)[0] == 62
    assert frame_counts(clip.duration, 30)[0] == 74


@pytest.mark.parametrize(
    "name, rate, codec, fmt, stereo, video",
    [
        ("s.flac", 44100, "flac", None, True, False),
        ("s.mp3", 48000, "libmp3lame", None, True, False),
        ("s.ogg", 48000, "libopus", "ogg", False, False),
        ("s.m4a", 44100, "aac", "ipod", False, False),
        ("s.mp4", 48000, "aac", None, True, True),  # audio track of a video
    ],
)
def test_containers_and_codecs(speech, name, rate, codec, fmt, stereo, video):
    data = _at(speech, rate)
    if stereo:
        data = np.stack([data, 0.5 * data], axis=1)
    path = speech["root"] / name
    _write_av(path, data, rate, codec, fmt, video)
    clip = load_audio(path)
    assert clip.source == name
    # Codec padding (AAC frames, Opus pre-skip) is removed: the length is the source length.
    assert clip.duration == pytest.approx(DURATION, abs=2e-3)
    assert abs(clip.waveform.shape[0] - N16) <= 32
    lag, err = _lag_and_error(clip.waveform, (0.75 if stereo else 1.0) * speech["ref16"])
    assert lag == 0  # no decoder delay (AAC priming is trimmed)
    assert err < (PCM_ERR if codec == "flac" else LOSSY_ERR), err
    assert frame_counts(clip.duration, 25)[0] == 62  # 2.48 s * 25
    assert frame_counts(clip.duration, 30)[0] == 74  # round(74.4)


def test_fixture_wav_is_bit_exact_with_librosa_scaling(fixtures_dir: Path, golden):
    # 16 kHz stereo int16: no resampling; channel mean of x / 32768 in float32 (librosa's path).
    clip = load_audio(fixtures_dir / "RD_Radio31_000.wav")
    np.testing.assert_array_equal(clip.waveform, golden("audio")["wav"])
    assert clip.duration == 8.0


def test_fixture_mp4_track(fixtures_dir: Path):
    clip = load_audio(str(fixtures_dir / "WDA_KatieHill_000.mp4"))
    assert clip.duration == pytest.approx(8.0, abs=2e-3)
    assert clip.waveform.shape == (128000,)
    check_speech(clip)


def test_array_forms_agree(speech):
    stereo = np.stack([speech["base"], 0.5 * speech["base"]]).astype(np.float32)  # (2, N)
    rate = speech["rate"]
    a = load_audio((stereo, rate))
    b = load_audio((stereo.T.copy(), rate))  # (N, 2): the short axis is the channel axis
    c = load_audio((torch.from_numpy(stereo), rate))
    with pytest.raises(InvalidAudioError, match=r"pass \(samples, sample_rate\)"):
        load_audio({"waveform": torch.from_numpy(stereo)[None], "sample_rate": rate})
    d = load_audio(stereo, sample_rate=rate)
    e = load_audio(AudioClip(stereo.mean(0), rate, DURATION))
    for other in (b, c, d, e):
        np.testing.assert_allclose(other.waveform, a.waveform, atol=1e-6)
    assert a.waveform.shape == (N16,)
    lag, err = _lag_and_error(a.waveform, 0.75 * speech["ref16"])
    assert lag == 0 and err < PCM_ERR
    # int16 PCM arrays are scaled by 1 / 32768
    pcm = (speech["base"] * 20000).astype(np.int16)
    i16 = load_audio((pcm, rate))
    f32 = load_audio((pcm.astype(np.float32) / 32768, rate))
    np.testing.assert_allclose(i16.waveform, f32.waveform, atol=1e-7)
    # 16 kHz input passes through unchanged
    x16 = speech["ref16"].astype(np.float32)
    np.testing.assert_array_equal(load_audio((x16, 16000)).waveform, x16)


def test_file_errors(speech, fixtures_dir: Path):
    root = speech["root"]
    with pytest.raises(InvalidAudioError, match="not found"):
        load_audio(root / "missing.wav")
    (root / "garbage.mp3").write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(InvalidAudioError, match="Could not read audio from garbage.mp3.*damaged"):
        load_audio(root / "garbage.mp3")
    _write_av(root / "full.mp4", _at(speech, 48000), 48000, "aac", video=True)
    (root / "cut.mp4").write_bytes((root / "full.mp4").read_bytes()[:2000])  # no index left
    with pytest.raises(InvalidAudioError, match="Could not read audio from cut.mp4"):
        load_audio(root / "cut.mp4")
    sf.write(root / "zero.wav", np.zeros(0), 16000, subtype="PCM_16")
    with pytest.raises(InvalidAudioError, match="no decodable audio samples"):
        load_audio(root / "zero.wav")
    with av.open(str(root / "video_only.mp4"), "w") as c:
        v = c.add_stream("mpeg4", rate=25)
        v.width = v.height = 32
        v.pix_fmt = "yuv420p"
        for _ in range(5):
            for p in v.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8))):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    with pytest.raises(InvalidAudioError, match="video_only.mp4 has no audio track"):
        load_audio(root / "video_only.mp4")
    with pytest.raises(InvalidAudioError, match="people_0.png has no audio track"):
        load_audio(fixtures_dir / "people_0.png")


def test_silence_and_length_errors(speech):
    root = speech["root"]
    wavfile.write(root / "silent.wav", 44100, np.zeros(44100, np.int16))
    silent = load_audio(root / "silent.wav")
    with pytest.raises(InvalidAudioError, match="silent .digital silence.*idle mode"):
        check_speech(silent)
    hiss = np.random.default_rng(1).uniform(-1, 1, 16000).astype(np.float32) * 3e-4  # -70 dBFS
    with pytest.raises(InvalidAudioError, match=r"silent \(peak -7\d\.\d dBFS.*idle_seconds"):
        check_speech(load_audio((hiss, 16000)))
    check_speech(load_audio((hiss * 100, 16000)))  # -30 dBFS is sound
    short = load_audio((speech["base"][:441], 22050))  # 20 ms < 40 ms of one 25 fps frame
    with pytest.raises(InvalidAudioError, match="shorter than one video frame .0.040 s at 25 fps"):
        check_min_duration(short, 25)
    check_min_duration(load_audio((speech["base"][:883], 22050)), 25)  # 40.05 ms is enough


def test_array_errors():
    with pytest.raises(InvalidAudioError, match="needs its sample rate"):
        load_audio(np.zeros(100, np.float32))
    with pytest.raises(InvalidAudioError, match="empty"):
        load_audio((np.zeros(0, np.float32), 16000))
    with pytest.raises(InvalidAudioError, match="NaN"):
        load_audio((np.full(100, np.nan, np.float32), 16000))
    with pytest.raises(InvalidAudioError, match="sample rate .* positive"):
        load_audio((np.zeros(100, np.float32), 0))
    with pytest.raises(InvalidAudioError, match=r"\(N,\) mono"):
        load_audio((np.zeros((2, 3, 100), np.float32), 16000))
    with pytest.raises(InvalidAudioError, match=r"dict .*pass \(samples, sample_rate\)"):
        load_audio({"waveform": torch.zeros(1, 2, 100), "sample_rate": 16000})  # host formats
    with pytest.raises(InvalidAudioError, match="Unsupported audio input"):
        load_audio(12.5)


@pytest.mark.parametrize("rate", [22050, 48000])
def test_resampling_is_the_official_resampy_kaiser_best(speech, rate: int):
    # The official loader (librosa 0.9.2) resamples with resampy kaiser_best: our file path gives
    # its output. That filter rolls off at 0.917 x 8 kHz, so it differs from scipy's
    # resample_poly reference (``ref16``) by ~3.9 % relative L2 on this speech (7.3-8 kHz band).
    import resampy  # test-only dependency

    path = speech["root"] / f"official_{rate}.wav"
    sf.write(path, _at(speech, rate), rate, subtype="PCM_16")
    x = sf.read(path, dtype="float32")[0]
    official = resampy.resample(x, rate, 16000, filter="kaiser_best")
    wav = load_audio(path).waveform
    assert wav.shape == (N16,)  # 2.48 s * 16 kHz, an exact count: no padding zero
    np.testing.assert_allclose(wav, official, atol=1e-6, rtol=0)
    _, ours_vs_scipy = _lag_and_error(wav, speech["ref16"])
    _, official_vs_scipy = _lag_and_error(official, speech["ref16"])
    assert abs(ours_vs_scipy - official_vs_scipy) < 1e-4
    assert 0.03 < official_vs_scipy < 0.045  # PCM_ERR above was tuned to libswresample
