"""The live endpoint /sadtalker/v1/stream (sadtalker_core/stream_server/) served by uvicorn as
``sadtalker serve`` does, with a real WebSocket client; and the page in headless Chromium
with a fake microphone."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sadtalker_core import SadTalkerPipeline
from sadtalker_core.stream_server import AUDIO_QUEUE, build_app, unpack

uvicorn = pytest.importorskip("uvicorn")
ws_client = pytest.importorskip("websockets.sync.client")
ConnectionClosed = pytest.importorskip("websockets.exceptions").ConnectionClosed

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(weights_dir):
    """``sadtalker serve``'s app on a free port (uvicorn in a thread)."""
    pipe = SadTalkerPipeline(weights_dir, "cpu")
    app = build_app(lambda: pipe)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    srv.url = f"127.0.0.1:{port}"
    srv.app = app
    yield srv
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def photo_b64(fixtures_dir) -> str:
    return base64.b64encode((fixtures_dir / "people_0.png").read_bytes()).decode()


def start(photo=None, face_id=None, rate=48000, fmt="f32le", **options) -> str:
    msg = {"type": "start", "sample_rate": rate, "format": fmt, "channels": 1}
    msg.update({"image": photo} if face_id is None else {"face_id": face_id})
    msg["options"] = {"detector": "dlib", "still": True, "batch_size": 2, **options}
    return json.dumps(msg)


def connect(server):
    return ws_client.connect(f"ws://{server.url}/sadtalker/v1/stream", max_size=64 << 20)


def speech(fixtures_dir, seconds: float, offset: float = 1.0):
    x, rate = sf.read(str(fixtures_dir / "speech_48k_mono.wav"), dtype="float32")
    return x[int(offset * rate) :][: int(round(seconds * rate))], rate


def receive_all(ws) -> list:
    out = []
    while True:
        try:
            msg = ws.recv(timeout=600)
        except ConnectionClosed:
            return out
        out.append(json.loads(msg) if isinstance(msg, str) else unpack(msg))


def test_a_stream_gives_frames_then_the_complete_mp4(server, photo_b64, fixtures_dir, tmp_path):
    x, rate = speech(fixtures_dir, 0.2)  # 0.2 s * 25 fps = 5 frames
    with connect(server) as ws:
        ws.send(start(photo_b64, rate=rate, seed=4))
        ready = json.loads(ws.recv(timeout=300))
        assert ready["type"] == "ready" and ready["fps"] == 25.0 and ready["face_id"]
        n = int(rate * 0.037)  # 37 ms messages
        for i in range(0, len(x), n):
            ws.send(x[i : i + n].astype("<f4").tobytes())
        ws.send(json.dumps({"type": "end"}))
        messages = receive_all(ws)
    frames = [m for m in messages if isinstance(m, tuple) and m[0]["type"] == "frame"]
    assert [h["index"] for h, _ in frames] == [0, 1, 2, 3, 4]
    assert [h["t"] for h, _ in frames] == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16])
    for _, jpeg in frames:
        assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    (video_header, mp4), done = messages[-2], messages[-1]
    assert video_header == {"type": "video", "frames": 5, "seconds": pytest.approx(0.2)}
    assert done == {"type": "done", "frames": 5, "seconds": pytest.approx(0.2)}
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4)
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 5 or len(list(c.decode(video=0))) == 5
    with av.open(str(path)) as c:
        audio = c.streams.audio[0]
        assert audio.sample_rate == 16000
        assert float(audio.duration * audio.time_base) == pytest.approx(0.2, abs=0.07)
    server.face_id = ready["face_id"]


def wait_idle(server, timeout=120.0) -> None:
    service = server.app.state.stream_service
    deadline = time.monotonic() + timeout
    while service.active:
        assert time.monotonic() < deadline, "the stream kept running after its client left"
        time.sleep(0.1)


def test_a_client_that_disconnects_stops_its_stream(server, photo_b64, fixtures_dir):
    x, rate = speech(fixtures_dir, 0.3)  # less than the lookahead: nothing rendered yet
    with connect(server) as ws:
        ws.send(start(photo_b64, rate=rate))
        assert json.loads(ws.recv(timeout=300))["type"] == "ready"
        ws.send(x.astype("<f4").tobytes())
        time.sleep(0.5)
        assert server.app.state.stream_service.active == 1
        ws.socket.close()  # gone without a close handshake
    wait_idle(server)


@pytest.mark.parametrize(
    "first, then, message",
    [
        (b"\x00\x01", None, "Expected a JSON text message, got binary data"),
        ("hello", None, "Not JSON: 'hello'"),
        ('{"type": "play"}', None, 'The first message must be a JSON text {"type": "start"'),
        ("UNKNOWN_OPTION", None, "Unknown option(s) volume; known: preprocess"),
        ("BAD_RATE", None, '"sample_rate" must be an integer in 8000..192000 Hz'),
        ("BAD_FACE", None, "Unknown face_id 'nope'"),
        ("BAD_IMAGE", None, '"image" is not valid base64'),
        ("OK", b"\x00\x01\x02", "An audio message of 3 bytes is not a whole number"),
        ("OK", '{"type": "pause"}', 'Expected binary PCM audio, {"type": "end"}'),
    ],
)
def test_garbage_gets_a_clear_error_and_the_server_stays_up(
    server, photo_b64, first, then, message
):
    special = {
        "UNKNOWN_OPTION": start(photo_b64, volume=3),
        "BAD_RATE": start(photo_b64, rate=5),
        "BAD_FACE": start(face_id="nope"),
        "BAD_IMAGE": start("***"),
        "OK": start(photo_b64),
    }
    with connect(server) as ws:
        ws.send(special.get(first, first))
        if then is not None:
            assert json.loads(ws.recv(timeout=300))["type"] == "ready"
            ws.send(then)
        reply = json.loads(ws.recv(timeout=60))
        assert reply["type"] == "error"
        assert message in reply["message"]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
        assert ws.close_code == 1008
    wait_idle(server)


def test_a_client_that_does_not_read_keeps_memory_bounded(server, photo_b64):
    """120 s of audio sent at once, no frame read: the server holds at most AUDIO_QUEUE
    messages, the rest waits in the client (its send blocks)."""
    rate = 48000
    tone = (0.3 * np.sin(np.arange(rate // 10) * 2 * np.pi * 220 / rate)).astype("<f4").tobytes()
    with connect(server) as ws:
        ws.send(start(photo_b64, rate=rate))
        assert json.loads(ws.recv(timeout=300))["type"] == "ready"
        sent = flood(ws, tone, 1200, seconds=8.0)  # 1200 * 0.1 s = 120 s, 23 MB
        assert sent < 1200, "the server read everything: nothing holds the audio back"
        assert server.app.state.stream_service.audio_backlog <= AUDIO_QUEUE
    wait_idle(server)


def flood(ws, message: bytes, count: int, seconds: float) -> int:
    """Send ``message`` ``count`` times from a thread; how many went out within ``seconds``
    (the connection is then dropped)."""
    sent = []

    def send():
        try:
            for _ in range(count):
                ws.send(message)
                sent.append(1)
        except ConnectionClosed:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    time.sleep(seconds)
    done = len(sent)
    ws.socket.close()
    sender.join(timeout=30)
    return done


# --------------------------------------------------------------------------------------------
# The page, in headless Chromium with a fake microphone


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no /usr/bin/chromium")
def test_the_page_shows_frames_while_the_microphone_streams(server, fixtures_dir, tmp_path):
    """The page streams the fake microphone (a looped speech fixture) and shows frames while
    the speech goes on; Stop ends the speech, then the complete video comes.

    At 1 fps a frame waits 13 s of speech (the renderer's 13-frame window): the first frame
    comes some 13 s + one frame's render after the microphone starts, so only that many frames
    (about 17 on a CPU) are rendered in all."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    x, rate = sf.read(str(fixtures_dir / "speech_48k_mono.wav"), dtype="int16")
    mic = tmp_path / "mic.wav"
    sf.write(str(mic), x, rate, subtype="PCM_16")
    args = [
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-gpu",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}",
    ]
    stats = "() => window.sadtalkerStats"
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://{server.url}/", wait_until="domcontentloaded")
            assert page.title() == "SadTalker live"
            page.set_input_files("#photo", str(fixtures_dir / "people_0.png"))
            page.check("#still")
            page.fill("#max", "30")  # the page stops the microphone after 30 s at the latest
            page.fill("#extra", json.dumps({"detector": "dlib", "fps": 1, "batch_size": 1}))
            page.click("#mic")
            page.wait_for_function(
                "() => { const s = window.sadtalkerStats;"
                " return s.frames > 0 || s.error || (s.audioSeconds > 0 && !s.streaming); }",
                timeout=120_000,
            )
            first = page.evaluate(stats)
            assert first["error"] is None, first["error"]
            # 13 s of lookahead + one frame's render (about 3 s on 2 cores) < 30 s of speech
            assert first["framesWhileStreaming"] >= 1, f"no frame during 30 s of speech: {first}"
            assert first["firstFrameAudioSeconds"] >= 13.0  # the lookahead at 1 fps
            if page.evaluate(stats)["streaming"]:
                page.click("#stop")
            page.wait_for_function(
                "() => window.sadtalkerStats.video || window.sadtalkerStats.error",
                timeout=300_000,  # bounded: about 30 frames at 1 fps after Stop
            )
            last = page.evaluate(stats)
            assert last["error"] is None, last["error"]
            assert abs(last["frames"] - last["audioSeconds"]) <= 1.0, last  # 1 frame per second
            assert page.eval_on_selector("#final", "v => v.src.startsWith('blob:')")
            assert page.eval_on_selector("#live", "i => i.naturalWidth") == 256
            page.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('Done:')",
                timeout=60_000,
            )
            assert errors == []
        finally:
            browser.close()


def test_the_a1111_api_mounts_the_endpoint():
    """sadtalker_webui.api.register (on_app_started) adds /sadtalker/v1/stream beside the HTTP
    routes: a message reaches the stream protocol."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from sadtalker_webui import api

    app = FastAPI()
    api.register(app)
    with TestClient(app).websocket_connect("/sadtalker/v1/stream") as ws:
        ws.send_text("hello")
        assert ws.receive_json() == {"type": "error", "message": "Not JSON: 'hello'."}


def test_sadtalker_serve_limits_come_from_its_flags(monkeypatch, weights_dir, photo_b64):
    """``sadtalker serve --max_seconds 0.2 --max_photo_mb 0.1``: the app it serves ends a stream
    whose audio or photo is past them, naming the flag; the transport's message cap (uvicorn's
    ws_max_size) stays above the largest start message the photo limit allows."""
    from fastapi.testclient import TestClient

    from sadtalker_core.cli.main import main

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    args = ["serve", "--checkpoint_dir", str(weights_dir), "--device", "cpu"]
    assert main([*args, "--max_seconds", "0.2", "--max_photo_mb", "0.1"]) == 0
    service = served["app"].state.stream_service
    assert served["host"] == "127.0.0.1"
    assert served["ws_max_size"] >= service.start_bytes(service.photo_limit()) > 0

    with TestClient(served["app"]).websocket_connect("/sadtalker/v1/stream") as ws:
        ws.send_text(start(photo_b64))  # people_0.png: 0.233 MB
        error = ws.receive_json()
    assert error["setting"] == "--max_photo_mb"
    assert error["message"].endswith(
        "Send a smaller photo (a PNG or JPEG of the face is enough), or raise the limit in the "
        "sadtalker serve command ('--max_photo_mb')."
    )

    assert main([*args, "--max_seconds", "0.2", "--max_photo_mb", "1"]) == 0
    tone = (0.3 * np.sin(np.arange(4800) * 2 * np.pi * 220 / 16000)).astype("<f4").tobytes()
    with TestClient(served["app"]).websocket_connect("/sadtalker/v1/stream") as ws:
        ws.send_text(start(photo_b64, rate=16000))
        assert ws.receive_json()["type"] == "ready"
        ws.send_bytes(tone)  # 0.3 s
        error = ws.receive_json()
        closed = ws.receive()
    assert error["setting"] == "--max_seconds"
    assert "lasts longer than the limit of 0.2 s" in error["message"]
    assert closed["code"] == 1008
