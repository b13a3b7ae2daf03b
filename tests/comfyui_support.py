"""What the ComfyUI tests share: one real ComfyUI server per test session and host version
(``COMFYUI_HOST_VERSION`` picks the snapshot: the newest by default, ``0.3.64`` the oldest we
support), its input folder, and the helpers to run workflows against it."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import sys
import threading
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from _support import SHARED, probe_mp4, read_frames, write_speech  # noqa: F401 (read_frames: tests)
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SHARED / "hosts"))
import comfyui_host as ch  # noqa: E402

URL_ENV = "SADTALKER_DOWNLOAD_URL_BASE"
# Input types the frontend shows as widgets (the others are sockets).
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3"}


def reference_video(src: Path, dest: Path, frames: int = 2) -> None:
    """The first ``frames`` frames of a fixture video, 25 fps, no audio."""
    with av.open(str(src)) as inp:
        pictures = []
        for frame in inp.decode(video=0):
            if len(pictures) == frames:
                break
            img = frame.to_ndarray(format="rgb24")
            pictures.append(img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2])
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.pix_fmt = "yuv420p"
        stream.width, stream.height = pictures[0].shape[1], pictures[0].shape[0]
        for img in pictures:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode(None))


class Mirror:
    """A local HTTP server serving a folder (the 'official' files), stoppable (offline)."""

    def __init__(self, root: Path):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a, **k: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.up = True

    def stop(self) -> None:
        if self.up:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.up = False


def fill_inputs(input_dir: Path, fixtures_dir: Path) -> None:
    """Everything the ComfyUI tests load: portraits, a face-free picture, speech of 1, 2 and 3
    frames, silence, a 2-frame and a 15-frame reference video."""
    shutil.copy(fixtures_dir / "people_0.png", input_dir / "people_0.png")
    shutil.copy(fixtures_dir / "people_0.png", input_dir / "portrait.png")
    Image.new("RGB", (256, 256), (128, 128, 128)).save(input_dir / "blank.png")
    write_speech(input_dir / "speech.wav", 0.05)  # 0.05 s x 25 fps = 1 frame
    write_speech(input_dir / "speech_2.wav", 0.08)  # 2 frames
    write_speech(input_dir / "speech_3.wav", 0.12)  # 3 frames
    write_speech(input_dir / "speech_6.wav", 0.24)  # 6 frames
    sf.write(str(input_dir / "silence.wav"), np.zeros(1600, np.float32), 16000)
    katie = fixtures_dir / "WDA_KatieHill_000.mp4"
    reference_video(katie, input_dir / "reference.mp4")
    reference_video(katie, input_dir / "reference_15.mp4", frames=15)


def start_server(input_dir: Path, output_dir: Path, env: dict) -> ch.ComfyUIServer:
    """A ComfyUI server (the snapshot COMFYUI_HOST_VERSION picks) with this pack, on the CPU,
    with this test process's Python (ComfyUI's requirements installed into it once)."""
    cache = ch.default_cache_dir()
    comfy = ch.ensure_comfyui(cache)
    cache.mkdir(parents=True, exist_ok=True)
    # Both snapshots install their requirements into this one environment: forget the other
    # version's install, so switching versions reinstalls what differs (e.g. the frontend).
    version = ch.comfyui_version(comfy)
    for stamp in Path(sys.prefix).glob("comfyui_host-*.stamp"):
        if stamp.name != f"comfyui_host-{version}.stamp":
            stamp.unlink()
    python = ch.ensure_env(
        comfy, python=sys.executable, pack_dirs=[REPO], log_path=cache / "setup.log"
    )
    srv = ch.ComfyUIServer(
        comfy, python, packs=[REPO], input_dir=input_dir, output_dir=output_dir, env=env
    )
    return srv.start()


def host_version(server: ch.ComfyUIServer) -> tuple[int, ...]:
    return tuple(int(p) for p in ch.comfyui_version(server.comfy_dir).split(".")[:3])


def node_id(graph: dict, class_type: str) -> str:
    return next(k for k, node in graph.items() if node["class_type"] == class_type)


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """What the frontend queues for a UI-format workflow: widget values in input order (plus the
    extra values of seed 'control after generate' and upload widgets), linked inputs as links.
    Widgets a newer host added after the workflow was saved (no value left) keep their defaults:
    they are left out, as an API workflow leaves them out."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        info = object_info[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node["inputs"] if i.get("link") is not None}
        values = iter(node["widgets_values"])
        inputs = {}
        for section in ("required", "optional"):
            for name in info["input_order"].get(section, []):
                kind, opts = (info["input"][section][name] + [{}])[:2]
                widget = isinstance(kind, list) or kind in WIDGET_TYPES
                value = missing = object()
                if widget:
                    value = next(values, missing)
                    extra = bool(opts.get("control_after_generate")) + bool(
                        opts.get("image_upload") or opts.get("video_upload")
                    )
                    extra += 2 * bool(opts.get("audio_upload"))  # upload button + player
                    for _ in range(extra):
                        next(values, None)
                if name in linked:
                    link = linked[name]
                    inputs[name] = [str(link[1]), link[2]]
                    assert link[3] == node["id"]
                elif widget and value is not missing:
                    inputs[name] = value
        assert next(values, None) is None, f"{node['type']}: widgets_values too long"
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def probe(path: str) -> tuple[int, float, int | None, float]:
    """(frames, fps, audio sample rate or None, audio seconds) of a video file."""
    info = probe_mp4(path)
    if not info["has_audio"]:
        return info["frames"], info["fps"], None, 0.0
    rate = info["audio_rate"]
    return info["frames"], info["fps"], rate, info["audio_samples"] / rate


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())
