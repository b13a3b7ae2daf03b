"""The AUTOMATIC1111 / Forge extension in real gradio 3.41.2 (A1111 1.10) and 4.40.0 (Forge).

Each gradio lives in its own ``--target`` folder (``.ci/hosts_a1111.sh``); a subprocess loads
``scripts/*.py`` the way the webui does, around stand-ins for the host's own modules
(``tests/a1111_host``), and serves on 127.0.0.1. The tab is driven with that version's
gradio_client and a headless Chromium, the API with urllib. Renders are tiny: 0.4 s of speech at
5 fps = 2 frames at 256 px.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
HOST = REPO / "tests" / "a1111_host"
GRADIO = {"3": REPO / ".ci" / "gradio3", "4": REPO / ".ci" / "gradio4"}
FPS = 5
CHROMIUM = "/usr/bin/chromium"
sys.path.insert(0, str(REPO))

from _support import probe_mp4, read_frames  # noqa: E402
from _support import write_speech as _speech  # noqa: E402

from sadtalker_webui.options import OPTIONS, OptionError, pipeline_config  # noqa: E402


def _probe(path: Path) -> tuple[int, float, float, bool]:
    info = probe_mp4(path)
    return info["frames"], info["fps"], info["frames"] / info["fps"], info["has_audio"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webui:
    """A running stand-in webui with the extension loaded."""

    def __init__(self, version: str, data: Path, weights: Path):
        target = GRADIO[version]
        if not (target / ".complete").exists():
            pytest.fail(f"{target} is missing: run .ci/hosts_a1111.sh first")
        self.version, self.data = version, data
        self.env = {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{HOST}"}
        self.env["SADTALKER_WEBUI_DATA"] = str(data)
        (data / "config.json").write_text(json.dumps({"sadtalker_weights_dir": str(weights)}))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data / "webui.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(HOST / "webui.py"), str(REPO), str(self.port)],
                cwd=data,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.time() + 240
        while "READY" not in self.log.read_text():
            if self.proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"the webui did not start:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.5)

    def state(self) -> dict:
        return self.get("/stand-in/state")[1]

    def get(self, route: str) -> tuple[int, dict]:
        with urllib.request.urlopen(self.url + route, timeout=30) as r:
            return r.status, json.load(r)

    def post(self, route: str, body: dict, timeout: float = 900) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url + route,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def drive(self, **request) -> dict:
        """A gradio_client call (drive.py), in this gradio's environment."""
        request.setdefault("option_names", [o.name for o in OPTIONS])
        request.setdefault("defaults", {o.name: _ui_default(o) for o in OPTIONS})
        out = subprocess.run(
            [sys.executable, str(HOST / "drive.py"), self.url, json.dumps(request)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert out.returncode == 0, out.stderr[-4000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def results(self) -> list[Path]:
        return sorted(p for p in (self.data / "outputs" / "sadtalker").rglob("*") if p.is_file())

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _ui_default(o):
    if o.kind == "choice":
        return str(o.default)
    return "" if o.kind == "angles" else o.default


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("a1111_media")
    blank = d / "no_face.png"
    gradient = np.linspace(40, 200, 320 * 320, dtype=np.float32).reshape(320, 320)
    Image.fromarray(np.stack([gradient.astype(np.uint8)] * 3, -1)).save(blank)
    return {
        "speech": _speech(d / "speech.wav", 0.4),  # 0.4 s * 5 fps = 2 frames
        "long_speech": _speech(d / "long.wav", 2.0),  # 10 frames: time to interrupt
        "no_face": blank,
        "portrait": Path(os.environ.get("SADTALKER_SHARED", REPO.parent / "shared"))
        / "fixtures"
        / "people_0.png",
    }


@pytest.fixture(scope="module", params=["3", "4"], ids=["gradio3", "gradio4"])
def webui(request, tmp_path_factory, all_weights):
    data = tmp_path_factory.mktemp(f"webui_gradio{request.param}")
    txt2img = data / "outputs" / "txt2img-images" / "2026-01-01"
    txt2img.mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(txt2img / "00001-123.png")
    server = Webui(request.param, data, all_weights)
    yield server
    server.close()


# --- no server ---------------------------------------------------------------------------


def test_options_use_the_cli_names_and_refuse_unknown_ones():
    config, values = pipeline_config(
        {"size": "512", "still": "true", "input_yaw": "0, 20", "enhancer": "gfpgan", "fps": 30}
    )
    assert config.extract.size == 512 and config.coeffs.still is True
    assert config.coeffs.input_yaw == (0.0, 20.0) and config.enhance.enhancer == "gfpgan"
    assert config.coeffs.fps == 30.0 and values["preprocess"] == "crop"
    with pytest.raises(OptionError, match="Unknown option 'pose'.*pose_style"):
        pipeline_config({"pose": 3})
    with pytest.raises(OptionError, match="'pose_style' must be in 0..45"):
        pipeline_config({"pose_style": 46})
    with pytest.raises(OptionError, match="'preprocess': choose one of"):
        pipeline_config({"preprocess": "zoom"})
    with pytest.raises(OptionError, match="together with a face enhancer"):
        pipeline_config({"background_enhancer": "realesrgan"})
    config, _ = pipeline_config({"background_enhancer": "realesrgan", "enhancer": "gfpgan"})
    assert config.enhance.background == "realesrgan"


def test_install_py_as_a1111_runs_it(tmp_path):
    """``install.py`` with A1111's ``launch`` importable: nothing to do -> no pip call, fast; a
    missing requirement -> one ``launch.run_pip`` pinned to the installed torch and numpy."""
    log = tmp_path / "pip.log"
    env = {**os.environ, "PYTHONPATH": str(HOST), "SADTALKER_RUN_PIP_LOG": str(log)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "install.py")], env=env, check=True, cwd=tmp_path)
    assert time.perf_counter() - t0 < 10
    assert not log.exists()

    ext = tmp_path / "extension"
    ext.mkdir()
    shutil.copy(REPO / "install.py", ext)
    (ext / "requirements.txt").write_text(
        "numpy\ntorch\nsafetensors>=0.4\nsadtalker-not-a-pkg>=1\n"
    )
    subprocess.run([sys.executable, str(ext / "install.py")], env=env, check=True, cwd=tmp_path)
    lines = log.read_text().splitlines()
    pips = [ln for ln in lines if " -m pip " in ln]
    assert len(pips) == 1 and 'install "sadtalker-not-a-pkg>=1"' in pips[0], lines
    from importlib.metadata import version

    assert f"constraint: torch=={version('torch')}" in lines
    assert f"constraint: numpy=={version('numpy')}" in lines


def test_failing_tab_shows_an_error_tab():
    """A1111 swallows an exception in on_ui_tabs and drops the tab; ours shows it instead."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('t', {str(REPO / 'scripts' / 'sadtalker_tab.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "def broken(): raise RuntimeError('boom in build_tab')\n"
        "m.ui.build_tab = broken\n"
        "[(tab, title, elem_id)] = m.on_ui_tabs()\n"
        "html = [b.value for b in tab.blocks.values() if getattr(b, 'value', None)]\n"
        "assert (title, elem_id) == ('SadTalker', 'sadtalker'), title\n"
        "assert any('boom in build_tab' in str(v) for v in html), html\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{GRADIO['3']}{os.pathsep}{HOST}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "building the tab failed" in out.stderr


# --- one stand-in webui per gradio version -------------------------------------------------


def test_tab_settings_and_weights(webui):
    state = webui.state()
    assert state["tabs"] == ["SadTalker"] and state["callback_errors"] == []
    assert set(state["settings"]) == {
        "sadtalker_weights_dir",
        "sadtalker_results_dir",
        "sadtalker_detector",
        "sadtalker_precision",
        "sadtalker_keep_loaded",
        "sadtalker_api_allow_paths",
        "sadtalker_api_path_folders",
        "sadtalker_api_max_request_mb",
        "sadtalker_api_max_seconds",
    }
    assert state["setting_sections"] == [str(("sadtalker", "SadTalker"))]
    status, report = webui.get("/sadtalker/v1/weights")
    by_name = {f["name"]: f["status"] for f in report["files"]}
    # A1111's pickle checker refuses every .pth here; the report goes through torch's own loader.
    assert by_name["mapping_00229-model.pth.tar"] == "found", report
    assert by_name["SadTalker_V0.0.2_256.safetensors"] == "found"


def test_generate_error_and_again_through_gradio_client(webui, media):
    """Click, a face-free picture (error text, no crash), click again: models built once."""
    today = datetime.date.today().isoformat()
    first = webui.drive(
        action="generate",
        image=str(media["portrait"]),
        audio=str(media["speech"]),
        options={"fps": FPS},
    )
    assert "2 frames at 5 fps = 0.40 s, with sound" in first["info"], first
    saved = [p for p in webui.results() if p.suffix == ".mp4"]
    assert len(saved) == 1 and saved[0].parent.name == today
    assert saved[0].parent.parent == webui.data / "outputs" / "sadtalker"
    assert _probe(saved[0]) == (2, 5.0, 0.4, True)
    assert _probe(Path(first["video"]))[:2] == (2, 5.0)
    assert str(saved[0]) in first["history"]
    loads = webui.state()["network_loads"]
    assert loads >= 5

    bad = webui.drive(
        action="generate", image=str(media["no_face"]), audio=str(media["speech"]), options={}
    )
    assert "NoFaceDetectedError" in bad["info"] and "No face" in bad["info"], bad

    again = webui.drive(
        action="generate",
        image=str(media["portrait"]),
        audio=str(media["speech"]),
        options={"fps": FPS, "seed": 3},
    )
    assert "2 frames at 5 fps" in again["info"], again
    assert len([p for p in webui.results() if p.suffix == ".mp4"]) == 2
    assert again["history"].count("<li>") == 2
    state = webui.state()
    assert state["pipelines_built"] == 1 and state["network_loads"] == loads
    assert state["refused_by_pickle_checker"] == []


# The same inputs as the command line: 2 frames, face restoration on, lossless video
ENHANCED = {"fps": FPS, "seed": 7, "pose_style": 3, "detector": "dlib", "batch_size": 2}
ENHANCED.update(enhancer="gfpgan", enhance_upscale="1", crf=0)


@pytest.fixture(scope="module")
def cli_enhanced(media, all_weights, tmp_path_factory) -> np.ndarray:
    """The command line's frames for ENHANCED (what the tab must give)."""
    from sadtalker_core.cli.main import main as cli_main

    out = tmp_path_factory.mktemp("cli_enhanced") / "cli.mp4"
    flags = [f"--{k}={v}" for k, v in ENHANCED.items()]
    args = ["--source_image", str(media["portrait"]), "--driven_audio", str(media["speech"])]
    assert cli_main([*args, *flags, "--checkpoint_dir", str(all_weights), "--out", str(out)]) == 0
    return read_frames(out)


def test_tab_and_command_line_give_the_same_frames_with_the_enhancer(webui, media, cli_enhanced):
    """One frame loop for every host: the tab renders, pastes and restores the faces as the
    command line does (face crops placed from the renderer's keypoints), frame for frame."""
    before = webui.results()
    out = webui.drive(
        action="generate",
        image=str(media["portrait"]),
        audio=str(media["speech"]),
        options=ENHANCED,
    )
    assert "2 frames at 5 fps" in out["info"], out
    (saved,) = [p for p in webui.results() if p not in before and p.suffix == ".mp4"]
    tab = read_frames(saved)
    assert tab.shape == cli_enhanced.shape and len(tab) == 2
    diff = np.abs(tab.astype(int) - cli_enhanced.astype(int))
    assert diff.max() <= 1, diff.max()  # the same algorithm; at most rounding apart


def test_interrupt_leaves_no_file(webui, media):
    before = webui.results()
    out = webui.drive(
        action="interrupt_generate",
        image=str(media["portrait"]),
        audio=str(media["long_speech"]),
        options={"fps": FPS, "batch_size": 1},
    )
    assert "Interrupted: no video was written" in out["info"], out
    assert '"sampling_steps": 10' in out["info"]  # 2 s * 5 fps
    assert webui.results() == before
    assert webui.state()["interrupted"] is False  # the host's wrapper resets it


def test_http_api(webui, media):
    b64 = {k: base64.b64encode(media[k].read_bytes()).decode() for k in ("portrait", "speech")}
    status, body = webui.post(
        "/sadtalker/v1/generate",
        {
            "source_image": b64["portrait"],
            "driven_audio": f"data:audio/wav;base64,{b64['speech']}",
            "fps": FPS,
            "still": True,
            "pose_style": 7,
        },
    )
    assert status == 200, body
    assert (body["frames"], body["fps"], body["seconds"]) == (2, 5.0, 0.4)
    assert Path(body["path"]).is_file() and Path(body["path"]).parent.parent.name == "sadtalker"
    video = webui.data / "api.mp4"
    video.write_bytes(base64.b64decode(body["video"]))
    assert _probe(video) == (2, 5.0, 0.4, True)

    status, body = webui.post(
        "/sadtalker/v1/generate",
        {"source_image": b64["portrait"], "driven_audio": b64["speech"], "pose": 1},
    )
    assert status == 400 and "Unknown option 'pose'" in body["error"]
    no_face = base64.b64encode(media["no_face"].read_bytes()).decode()
    status, body = webui.post(
        "/sadtalker/v1/generate",
        {"source_image": f"data:image/png;base64,{no_face}", "driven_audio": b64["speech"]},
    )
    assert status == 422 and body["type"] == "NoFaceDetectedError", body
    status, body = webui.post(
        "/sadtalker/v1/generate",
        {"source_image": b64["portrait"], "driven_audio": "bm90IGF1ZGlv"},
    )
    assert status == 422 and body["type"] == "InvalidAudioError", body
    status, body = webui.post(
        "/sadtalker/v1/generate",
        {"source_image": b64["portrait"], "driven_audio": "https://example.com/a.wav"},
    )
    assert status == 400 and "URLs are not fetched" in body["error"], body
    status, body = webui.post("/sadtalker/v1/generate", {"driven_audio": "x"})
    assert status == 400 and "source_image" in body["error"]


def test_last_txt2img_image(webui):
    out = webui.drive(action="from_txt2img")
    assert "00001-123.png" in out["info"]
    image = out["image"]["path"] if isinstance(out["image"], dict) else out["image"]
    assert Image.open(image).size == (64, 48)


def test_browser(webui, media):
    """Headless Chromium: open the tab, upload, Generate, see the progress, then the video."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(webui.url, wait_until="load")  # gradio 4 keeps a stream open: never idle
        page.locator("#tabs button:has-text('SadTalker')").first.click()
        page.locator("#sadtalker_image input[type=file]").set_input_files(str(media["portrait"]))
        page.locator("#sadtalker_audio input[type=file]").set_input_files(str(media["speech"]))
        page.get_by_text("Advanced", exact=True).click()
        # one frame per batch: the progress shows "Rendering frames" while the second renders
        for name, value in (("fps", FPS), ("batch_size", 1)):
            box = page.locator(f"#sadtalker_{name} input[type=number]")
            box.fill(str(value))
            box.press("Enter")
        page.wait_for_timeout(1000)  # uploads finish
        page.locator("#sadtalker_generate").click()
        page.get_by_text("Rendering frames").first.wait_for(timeout=300_000)
        video = page.locator("#sadtalker_video video")
        video.wait_for(timeout=600_000)
        duration = page.wait_for_function(
            "() => { const v = document.querySelector('#sadtalker_video video');"
            " return v && v.readyState >= 1 && v.duration; }",
            timeout=60_000,
        ).json_value()
        info = page.locator("#sadtalker_info").first.inner_text()
        browser.close()
    assert abs(duration - 0.4) < 0.05, duration
    assert "2 frames at 5 fps" in info


# --- what the HTTP API may read, its limits, its queue ----------------------------------------

GENERATE = "/sadtalker/v1/generate"
FILE_FIELDS = ("source_image", "driven_audio", "ref_pose", "ref_eyeblink")


@contextlib.contextmanager
def _settings(webui: Webui, **values):
    """Settings changed as on the Settings page for one test, then put back."""
    before = webui.get("/sdapi/v1/options")[1]
    assert webui.post("/stand-in/settings", values)[1] == values
    try:
        yield
    finally:
        webui.post("/stand-in/settings", {k: before[k] for k in values})


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _request(media, **fields) -> dict:
    """A valid request (base64 inputs, 2 frames) with ``fields`` replaced."""
    return {
        "source_image": _b64(media["portrait"]),
        "driven_audio": _b64(media["speech"]),
        "fps": FPS,
        **fields,
    }


def _clip(path: Path, frames: int) -> Path:
    """A silent 64x64 video of ``frames`` frames at 25 fps (a reference video)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((64, 64, 3), i * 20, np.uint8)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode())
    return path


def test_api_reads_no_server_path_by_default(webui, media, tmp_path):
    """Every file field: a server path is a 403 naming the setting, the same answer for a file
    that exists and one that does not; /sdapi/v1/options cannot open paths (restrict_api)."""
    missing = tmp_path / "missing.png"
    for field in FILE_FIELDS:
        answers = []
        for path in (media["portrait"], missing):
            status, body = webui.post(GENERATE, _request(media, **{field: str(path)}))
            assert status == 403, body
            answers.append(body)
        assert answers[0] == answers[1], answers  # nothing tells the files apart
        assert answers[0]["setting"] == "sadtalker_api_allow_paths"
        assert (
            f"'{field}'" in answers[0]["error"]
            and "sadtalker_api_allow_paths" in answers[0]["error"]
        )
    webui.post(
        "/sdapi/v1/options", {"sadtalker_api_allow_paths": True, "sadtalker_api_path_folders": "/"}
    )
    options = webui.get("/sdapi/v1/options")[1]
    assert options["sadtalker_api_allow_paths"] is False, options
    assert options["sadtalker_api_path_folders"] == ""
    status, body = webui.post(GENERATE, _request(media, source_image=str(media["portrait"])))
    assert status == 403, body


def test_api_reads_paths_only_inside_the_listed_folders(webui, media, tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    shutil.copy(media["portrait"], allowed / "face.png")
    shutil.copy(media["speech"], allowed / "speech.wav")
    shutil.copy(media["speech"], outside / "secret.wav")
    (allowed / "link.wav").symlink_to(outside / "secret.wav")  # a file link leading out
    (allowed / "out").symlink_to(outside, target_is_directory=True)  # a folder link leading out
    folders = f"{allowed}\n{tmp_path / 'elsewhere'}"
    with _settings(webui, sadtalker_api_allow_paths=True, sadtalker_api_path_folders=folders):
        refused = {
            "dot-dot": f"{allowed}/../outside/secret.wav",
            "dot-dot, missing": f"{allowed}/../outside/nothing.wav",
            "file link": str(allowed / "link.wav"),
            "folder link": str(allowed / "out" / "secret.wav"),
            "folder link, missing": str(allowed / "out" / "nothing.wav"),
            "outside": str(outside / "secret.wav"),
            "relative": "../../../../../../etc/passwd",
        }
        errors = set()
        for case, value in refused.items():
            for field in ("driven_audio", "ref_eyeblink"):
                status, body = webui.post(GENERATE, _request(media, **{field: value}))
                assert status == 403, (case, body)
                assert body["setting"] == "sadtalker_api_path_folders", (case, body)
                errors.add(body["error"].replace(repr(value), "<value>").replace(field, "<f>"))
        assert len(errors) == 1, errors  # one answer, whether the file exists or not
        assert "sadtalker_api_path_folders" in errors.pop()

        status, body = webui.post(
            GENERATE, _request(media, driven_audio=str(allowed / "nothing.wav"))
        )
        assert status == 400 and "there is no file" in body["error"], body

        status, body = webui.post(
            GENERATE,
            _request(
                media,
                source_image=str(allowed / "face.png"),
                driven_audio=f"{allowed}/sub/../speech.wav",  # '..' that stays inside
            ),
        )
        assert status == 200, body
        assert (body["frames"], body["fps"]) == (2, 5.0)  # 0.4 s * 5 fps
        assert Path(body["path"]).name.endswith("_face.mp4")


def test_api_limits_request_size_and_duration(webui, media, tmp_path):
    """413 naming the limit and its setting: decoded files, the body, audio, reference video
    and idle motion; nothing is rendered."""
    portrait_mb = media["portrait"].stat().st_size / 2**20  # 0.23 MB
    with _settings(webui, sadtalker_api_max_request_mb=0.1):
        status, body = webui.post(GENERATE, _request(media))
        assert status == 413 and body["setting"] == "sadtalker_api_max_request_mb", body
        assert f"decode to {portrait_mb:.1f} MB; the limit is 0.1 MB" in body["error"]
        # a body far past the limit (0.1 MB * 3/2 as base64 + 1 MB of JSON) is not read
        status, body = webui.post(GENERATE, _request(media, driven_audio="A" * (2 << 20)))
        assert status == 413 and body["setting"] == "sadtalker_api_max_request_mb", body
        assert "its files may decode to 0.1 MB at most" in body["error"], body

    reference = _b64(_clip(tmp_path / "ref.mp4", 10))  # 10 frames / 25 fps = 0.4 s
    short = _b64(_speech(tmp_path / "short.wav", 0.2))
    with _settings(webui, sadtalker_api_max_seconds=0.3):
        for field, fields in {
            "driven_audio": {},  # 0.4 s of speech
            "ref_pose": {"driven_audio": short, "ref_pose": reference},
            "ref_eyeblink": {"driven_audio": short, "ref_eyeblink": reference},
            "idle_seconds": {"driven_audio": None, "idle_seconds": 1},
        }.items():
            status, body = webui.post(GENERATE, _request(media, **fields))
            assert status == 413 and body["setting"] == "sadtalker_api_max_seconds", body
            assert f"'{field}' lasts longer than the limit of 0.3 s" in body["error"], body


def _post_in_thread(webui: Webui, body: dict) -> tuple[threading.Thread, list]:
    answer: list = []
    thread = threading.Thread(target=lambda: answer.append(webui.post(GENERATE, body)))
    thread.start()
    return thread, answer


def _jobs(webui: Webui, start: int) -> list[str]:
    """The host's "Starting job" / "Ending job" lines logged since ``start`` (characters)."""
    text = webui.log.read_text()[start:]
    return [ln.split(" INFO ")[-1].split(" (")[0] for ln in text.splitlines() if " job " in ln]


def test_api_two_requests_queue_and_both_finish(webui, media):
    mark = len(webui.log.read_text())
    runs = [_post_in_thread(webui, _request(media, seed=seed)) for seed in (1, 2)]
    for thread, _ in runs:
        thread.join(600)
    answers = [answer[0] for _, answer in runs]
    assert [status for status, _ in answers] == [200, 200], answers
    assert [body["frames"] for _, body in answers] == [2, 2]
    assert answers[0][1]["path"] != answers[1][1]["path"]
    # one after the other under the host's queue lock, never interleaved
    assert _jobs(webui, mark) == ["Starting job sadtalker-api", "Ending job sadtalker-api"] * 2


def test_api_interrupt_leaves_the_next_request_unaffected(webui, media):
    """An Interrupt while idle does not stop the next job; one during a render stops only that
    job (409, no file) and the request queued behind it renders."""
    before = webui.results()
    webui.post("/sdapi/v1/interrupt", {})
    assert webui.state()["interrupted"] is True
    long = _request(media, driven_audio=_b64(media["long_speech"]), batch_size=1)
    first, first_answer = _post_in_thread(webui, long)  # 2 s * 5 fps = 10 frames, one a batch
    deadline = time.time() + 300
    # job_count is 1 during an API job and 0 between jobs (textinfo keeps the last job's text)
    while True:
        st = webui.state()
        if st["job_count"] == 1 and str(st["textinfo"]).startswith("SadTalker: render"):
            break
        assert time.time() < deadline and first.is_alive(), first_answer
        time.sleep(0.2)
    second, second_answer = _post_in_thread(webui, _request(media))
    time.sleep(1)  # the second request waits for the queue lock
    webui.post("/sdapi/v1/interrupt", {})
    first.join(600)
    second.join(600)
    status, body = first_answer[0]
    assert status == 409 and "Interrupted: no video was written" in body["error"], body
    status, body = second_answer[0]
    assert status == 200 and body["frames"] == 2, body
    assert webui.results() == sorted([*before, Path(body["path"])])
    assert webui.state()["interrupted"] is False
