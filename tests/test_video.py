"""Streaming MP4 writer: codecs, exact frame count and duration, odd sizes, no partial files."""

from __future__ import annotations

import av
import numpy as np
import pytest
from _support import probe_mp4 as _probe

from sadtalker_core.errors import SadTalkerError
from sadtalker_core.io.video import VideoWriter


def _frames(n, h=64, w=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(("fps", "n"), [(25, 50), (30, 61), (24, 7)])
def test_h264_aac_with_exact_length(tmp_path, fps, n):
    audio = np.zeros(16000 * 5, np.float32)  # longer than the video: must be cut
    out = tmp_path / "clip.mp4"
    with VideoWriter(out, fps=fps, audio=audio) as w:
        for i in range(0, n, 8):
            w.write(_frames(min(8, n - i)))
    info = _probe(out)
    assert info["vcodec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["acodec"] == "aac"
    assert info["frames"] == n
    assert abs(info["audio_s"] - n / fps) <= 1.0 / fps  # audio ends with the last frame
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_short_audio_is_padded(tmp_path):
    out = tmp_path / "pad.mp4"
    with VideoWriter(out, fps=25, audio=np.zeros(1600, np.float32)) as w:  # 0.1 s audio
        w.write(_frames(25))  # 1 s video
    info = _probe(out)
    assert abs(info["audio_s"] - 1.0) <= 0.04


def test_odd_size_is_padded_not_resized(tmp_path):
    out = tmp_path / "odd.mp4"
    frame = np.zeros((1, 45, 63, 3), np.uint8)
    frame[..., 0] = 200
    with VideoWriter(out, fps=25) as w:
        w.write(frame)
    info = _probe(out)
    assert info["size"] == (64, 46)
    with av.open(str(out)) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert abs(int(img[20, 30, 0]) - 200) < 12  # content kept, not stretched


def test_error_inside_with_leaves_no_file(tmp_path):
    out = tmp_path / "fail.mp4"
    with (
        pytest.raises(RuntimeError, match="cancelled"),
        VideoWriter(out, fps=25, audio=np.zeros(16000, np.float32)) as w,
    ):
        w.write(_frames(10))
        raise RuntimeError("cancelled by user")
    assert list(tmp_path.iterdir()) == []


def test_bad_frames_are_refused(tmp_path):
    w = VideoWriter(tmp_path / "x.mp4", fps=25)
    with pytest.raises(SadTalkerError, match="uint8"):
        w.write(np.zeros((4, 4, 3), np.float32))
    w.write(_frames(1))
    with pytest.raises(SadTalkerError, match="Frame size changed"):
        w.write(_frames(1, 32, 32))
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_closing_without_frames_is_an_error(tmp_path):
    with pytest.raises(SadTalkerError, match="No frames"):
        VideoWriter(tmp_path / "empty.mp4").close()
    assert list(tmp_path.iterdir()) == []
