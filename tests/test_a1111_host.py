"""The host adapter of the A1111 / Forge tab without a server: memory sharing with the diffusion
model, A1111's pickle checker, keep/offload/release after a run."""

from __future__ import annotations

import base64
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sadtalker_webui import api, api_inputs, host  # noqa: E402
from sadtalker_webui.studio import Studio  # noqa: E402


def _host_modules(monkeypatch, **modules: types.ModuleType) -> None:
    """Put stand-in host modules (``modules.sd_models``...) into sys.modules for one test."""
    for name, module in modules.items():
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in sys.modules:
                pkg = types.ModuleType(parent)
                pkg.__path__ = []
                monkeypatch.setitem(sys.modules, parent, pkg)
        monkeypatch.setitem(sys.modules, name, module)


def test_make_room_moves_a1111_model_and_gives_it_back(monkeypatch):
    calls = []
    sd_models = types.ModuleType("modules.sd_models")
    sd_models.unload_model_weights = lambda sd_model=None, info=None: calls.append(
        ("cpu", sd_model)
    )
    sd_models.send_model_to_device = lambda m: calls.append(("gpu", m))
    shared = types.ModuleType("modules.shared")
    shared.sd_model = "the SD model"
    _host_modules(monkeypatch, **{"modules.sd_models": sd_models, "modules.shared": shared})
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)

    monkeypatch.setattr(host, "free_device_memory", lambda dev: 8 << 30)
    assert host.make_room("cuda", 4 << 30) is None and calls == []  # enough free: untouched

    monkeypatch.setattr(host, "free_device_memory", lambda dev: 1 << 30)
    give_back = host.make_room("cuda", 4 << 30)
    assert calls == [("cpu", "the SD model")]
    give_back()
    assert calls == [("cpu", "the SD model"), ("gpu", "the SD model")]


def test_make_room_asks_forge_memory_manager(monkeypatch):
    freed = []
    mm = types.ModuleType("backend.memory_management")
    mm.free_memory = lambda need, device, keep_loaded=(), free_all=False: freed.append(
        (need, device)
    )
    _host_modules(monkeypatch, **{"backend.memory_management": mm})
    monkeypatch.setattr(host, "free_device_memory", lambda dev: 1 << 30)
    assert host.make_room("cuda:0", 3 << 30) is None  # Forge reloads its model on demand
    assert freed == [(3 << 30, torch.device("cuda:0"))]


def test_make_room_is_a_no_op_on_cpu():
    assert host.make_room("cpu", 1 << 40) is None


def test_own_loader_bypasses_the_pickle_checker_only_for_weights_only(monkeypatch, tmp_path):
    refused = []

    def checker(path, *args, **kwargs):  # A1111's modules.safe.load refusing the file
        refused.append(path)

    safe = types.ModuleType("modules.safe")
    safe.unsafe_torch_load = torch.load
    _host_modules(monkeypatch, **{"modules.safe": safe})
    monkeypatch.setattr(torch, "load", checker)
    path = tmp_path / "t.pth"
    torch.save({"w": torch.ones(2)}, path)
    with host.torch_own_loader(), host.torch_own_loader():  # re-entrant
        assert torch.load(path, weights_only=True)["w"].sum() == 2
        assert torch.load(path) is None  # not weights_only: still the host's checker
    assert torch.load is checker and refused == [path]


class _Pipe:
    def __init__(self):
        self.calls = []

    def offload(self):
        self.calls.append("offload")

    def release(self):
        self.calls.append("release")


@pytest.mark.parametrize(
    ("keep", "moved_host_model", "expected"),
    [
        (True, False, []),  # resident, nothing borrowed
        (True, True, ["offload"]),  # resident in RAM, the GPU goes back to the SD model
        (False, False, ["release"]),
        (False, True, ["release"]),
    ],
)
def test_after_run_keeps_offloads_or_releases(monkeypatch, keep, moved_host_model, expected):
    monkeypatch.setattr(
        host, "opt", lambda key, default=None: keep if key == "sadtalker_keep_loaded" else default
    )
    studio, pipe, gave_back = Studio(), _Pipe(), []
    studio._pipe = pipe
    studio._after_run((lambda: gave_back.append(1)) if moved_host_model else None)
    assert pipe.calls == expected
    assert gave_back == ([1] if moved_host_model else [])
    assert (studio._pipe is None) == (not keep)


def test_api_tells_paths_from_base64():
    """Decided from the text alone: base64 of a known format, or without a path separator, is
    data; anything else short is a path (and then goes through the path settings)."""
    cases = {
        base64.b64encode(b"\x89PNG\r\n" + bytes(16)).decode(): False,
        base64.b64encode(b"\xff\xd8\xff" + bytes(16)).decode(): False,  # "/9j/...": a JPEG
        "bm90IGF1ZGlv": False,  # "not audio": base64, its decoder says what is wrong
        "/tmp/abc": True,  # valid base64 too, but no known format and a separator
        "speech.wav": True,
        r"C:\media\face.png": True,
        "~/face.png": True,
    }
    for value, is_path in cases.items():
        assert api_inputs._is_path(value, api_inputs._b64(value)) is is_path, value


def test_api_server_path_rules(monkeypatch, tmp_path):
    settings = {}
    monkeypatch.setattr(host, "opt", lambda key, default=None: settings.get(key, default))
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "sub").mkdir(parents=True)
    outside.mkdir()
    (data / "sub" / "a.wav").write_bytes(b"RIFF")
    (outside / "b.wav").write_bytes(b"RIFF")
    (data / "out.wav").symlink_to(outside / "b.wav")
    (tmp_path / "data_link").symlink_to(data, target_is_directory=True)
    (outside / "in.wav").symlink_to(data / "sub" / "a.wav")

    with pytest.raises(api_inputs.ForbiddenInputError, match="sadtalker_api_allow_paths") as e:
        api_inputs.server_path("driven_audio", str(data / "sub" / "a.wav"))  # off by default
    assert e.value.setting == "sadtalker_api_allow_paths"
    settings["sadtalker_api_allow_paths"] = "false"  # a string from a hand-edited config.json
    with pytest.raises(api_inputs.ForbiddenInputError):
        api_inputs.server_path("driven_audio", str(data / "sub" / "a.wav"))

    settings.update(sadtalker_api_allow_paths=True, sadtalker_api_path_folders=f"{tmp_path}/x;")
    settings["sadtalker_api_path_folders"] += str(tmp_path / "data_link")  # listed via a link
    real = str((data / "sub" / "a.wav").resolve())
    assert api_inputs.server_path("driven_audio", str(data / "sub" / "a.wav")) == real
    assert api_inputs.server_path("driven_audio", f"{tmp_path}/data_link/sub/../sub/a.wav") == real
    for refused in (
        data / "out.wav",  # a link inside pointing out
        outside / "in.wav",  # outside, even where it leads inside
        outside / "missing.wav",
        f"{data}/../outside/b.wav",
        f"{data}/sub/../../outside/b.wav",
    ):
        with pytest.raises(api_inputs.ForbiddenInputError, match="sadtalker_api_path_folders"):
            api_inputs.server_path("driven_audio", str(refused))
    with pytest.raises(api_inputs.BadInputError, match="there is no file"):
        api_inputs.server_path("driven_audio", str(data / "sub" / "missing.wav"))
    with pytest.raises(api_inputs.BadInputError, match="there is no file"):
        api_inputs.server_path("driven_audio", str(data / "sub"))  # a folder


# --------------------------------------------------------------------------------------------
# The live endpoint as A1111 mounts it (api.register): a host job with the API's duration limit


@pytest.fixture(scope="module")
def live_pipe(weights_dir):
    from sadtalker_core import SadTalkerPipeline

    return SadTalkerPipeline(weights_dir, "cpu")


def _live(monkeypatch, live_pipe, **opts):
    """A TestClient of an app with api.register's routes, under stand-in ``modules.shared``
    (settings ``opts``, the host's ``state``); returns (client, state)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    shared = types.ModuleType("modules.shared")
    shared.opts = types.SimpleNamespace(**opts)
    shared.state = host._State()
    _host_modules(monkeypatch, **{"modules.shared": shared})
    app = FastAPI()
    api.register(app, types.SimpleNamespace(pipeline=lambda: live_pipe))  # the Studio's part
    return TestClient(app), shared.state


def _start_live(ws, fixtures_dir, rate: int = 16000) -> None:
    photo = base64.b64encode((fixtures_dir / "people_0.png").read_bytes()).decode()
    options = {"detector": "dlib", "still": True, "batch_size": 2}
    start = {"type": "start", "image": photo, "sample_rate": rate, "format": "f32le"}
    ws.send_json({**start, "channels": 1, "options": options})
    assert ws.receive_json()["type"] == "ready"


def _tone(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype("<f4").tobytes()


def test_live_stream_obeys_the_api_duration_limit(monkeypatch, live_pipe, fixtures_dir):
    """Audio past sadtalker_api_max_seconds ends the stream: an error naming the limit and the
    setting, close code 1008 with a reason naming both; the host job ends."""
    client, state = _live(monkeypatch, live_pipe, sadtalker_api_max_seconds=0.3)
    with client.websocket_connect("/sadtalker/v1/stream") as ws:
        _start_live(ws, fixtures_dir)
        ws.send_bytes(_tone(0.2))  # within the limit
        ws.send_bytes(_tone(0.2))  # 0.4 s in all
        error = ws.receive_json()
        closed = ws.receive()
    assert error["type"] == "error" and error["setting"] == "sadtalker_api_max_seconds"
    assert "longer than the limit of 0.3 s" in error["message"]
    assert "Settings > SadTalker ('sadtalker_api_max_seconds')" in error["message"]
    assert closed["code"] == 1008
    assert closed["reason"] == "Audio past the 0.3 s limit ('sadtalker_api_max_seconds')"
    _wait_job_end(state)


def _wait_job_end(state, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while state.job_count != 0 or not host.queue_lock().acquire(timeout=0.1):
        assert time.monotonic() < deadline, "the live stream's host job did not end"
        time.sleep(0.05)
    host.queue_lock().release()


@pytest.mark.parametrize("audio_s", [0.0, 0.4])
def test_live_stream_is_a_host_job_that_interrupt_stops(
    monkeypatch, live_pipe, fixtures_dir, audio_s
):
    """A live stream holds the host's job (its progress text shows it); the host's Interrupt
    (/sdapi/v1/interrupt) stops it, also while it waits for audio, with an error saying so; the
    job's stop flag is cleared for the next job. No limit when the setting is 0."""
    client, state = _live(monkeypatch, live_pipe, sadtalker_api_max_seconds=0)
    with client.websocket_connect("/sadtalker/v1/stream") as ws:
        _start_live(ws, fixtures_dir)
        if audio_s:
            ws.send_bytes(_tone(audio_s))  # less than the lookahead: no frame yet
        deadline = time.monotonic() + 60
        while state.textinfo != "SadTalker live: waiting for speech":
            assert time.monotonic() < deadline, f"no host job: {state.textinfo!r}"
            time.sleep(0.05)
        assert state.job_count == 1
        host.interrupt()
        error = ws.receive_json()
        closed = ws.receive()
    assert error["type"] == "error" and "setting" not in error
    # with audio: the next chunk's check, or the wait for more audio
    assert error["message"].startswith("Interrupted on the server: "), error
    if not audio_s:
        assert error["message"].endswith("the stream was stopped while it waited for audio.")
    assert closed["code"] == 1000
    _wait_job_end(state)
    assert not host.is_interrupted()


@pytest.mark.parametrize("limit_mb", [0.2, 0.1])  # 0.2: decoded size; 0.1: the message itself
def test_live_stream_photo_obeys_the_api_request_size(
    monkeypatch, live_pipe, fixtures_dir, limit_mb
):
    """The start photo weighs at most sadtalker_api_max_request_mb decoded (people_0.png: 0.233
    MB): past it the stream ends before any extraction, with an error naming the limit and the
    setting, close code 1008 with a reason naming both."""
    client, state = _live(monkeypatch, live_pipe, sadtalker_api_max_request_mb=limit_mb)
    loads = []
    monkeypatch.setattr(live_pipe, "extract", lambda *a, **k: loads.append(a))
    with client.websocket_connect("/sadtalker/v1/stream") as ws:
        photo = base64.b64encode((fixtures_dir / "people_0.png").read_bytes()).decode()
        ws.send_json({"type": "start", "image": photo, "sample_rate": 16000, "format": "f32le"})
        error = ws.receive_json()
        closed = ws.receive()
    assert error["type"] == "error" and error["setting"] == "sadtalker_api_max_request_mb"
    assert f"the limit is {limit_mb:g} MB" in error["message"]
    assert "Settings > SadTalker ('sadtalker_api_max_request_mb')" in error["message"]
    if limit_mb == 0.2:
        assert "The photo of this stream is 0.233 MB" in error["message"]
    assert closed["code"] == 1008
    assert (
        closed["reason"] == f"Photo past the {limit_mb:g} MB limit ('sadtalker_api_max_request_mb')"
    )
    assert not loads and state.job_count == 0


def test_live_stream_photo_past_8_mb_passes_when_the_setting_allows(
    monkeypatch, live_pipe, fixtures_dir, tmp_path
):
    """A 9 MB photo under sadtalker_api_max_request_mb=20 reaches the face finder (the core's
    message for a face-free picture), not a size error."""
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (1800, 1800, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png", compress_level=1)
    data = (tmp_path / "noise.png").read_bytes()
    assert len(data) > 9 << 20
    client, _ = _live(monkeypatch, live_pipe, sadtalker_api_max_request_mb=20)
    with client.websocket_connect("/sadtalker/v1/stream") as ws:
        photo = base64.b64encode(data).decode()
        options = {"detector": "dlib"}
        ws.send_json({"type": "start", "image": photo, "sample_rate": 16000, "options": options})
        error = ws.receive_json()
    assert error["type"] == "error" and "setting" not in error
    assert "No face" in error["message"], error
