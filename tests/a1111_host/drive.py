"""Drive the SadTalker tab through gradio_client (run with the gradio version the server runs).

gradio_client 0.5 (gradio 3) needs two patches that do not concern the server: it uploads every
file input (None included) and cannot read an unchanged video output.

    python drive.py <url> '<json request>'   ->  prints one JSON line

Requests: {"action": "generate", "image": path, "audio": path, "options": {...}}
          {"action": "interrupt_generate", ...generate fields...}: starts a generation, waits
              until a frame is rendered (GET /stand-in/state), clicks Interrupt, waits for it
          {"action": "from_txt2img"}
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request

import gradio_client
from gradio_client import Client

CLIENT_MAJOR = int(gradio_client.__version__.split(".")[0])

if CLIENT_MAJOR == 0:  # gradio_client 0.5 uploads every file input and fails on an empty one
    from gradio_client.client import Endpoint

    _upload_all = Endpoint._upload

    def _upload_given(self, file_paths):
        given = iter(_upload_all(self, [f for f in file_paths if f is not None]) or ())
        return [None if f is None else next(given) for f in file_paths]

    Endpoint._upload = _upload_given

    from gradio_client.serializing import VideoSerializable

    _video_out = VideoSerializable.deserialize

    def _video_or_none(self, x, *args, **kwargs):  # an unchanged output ({"__type__": "update"})
        if x is None or (isinstance(x, dict) and x.get("__type__") == "update"):
            return None
        return _video_out(self, x, *args, **kwargs)

    VideoSerializable.deserialize = _video_or_none


def _state(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/stand-in/state", timeout=10) as r:
        return json.load(r)


def _inputs(req: dict, option_names: list[str]) -> list:
    files = [req["image"], req.get("audio")]
    if CLIENT_MAJOR == 0:  # gradio 3: the microphone is its own component
        files.append(None)
    files += [None, None, None]  # audio file, reference pose, reference blink
    if CLIENT_MAJOR >= 1:
        files = [gradio_client.handle_file(f) if f else None for f in files]
    options = req.get("options", {})
    defaults = req["defaults"]
    return files + [options.get(n, defaults[n]) for n in option_names]


def _video_path(value):
    if isinstance(value, dict):
        return value.get("video")
    return value


def main() -> None:
    url, req = sys.argv[1], json.loads(sys.argv[2])
    client = Client(url, verbose=False)
    action = req["action"]
    if action == "from_txt2img":
        image, info = client.predict(api_name="/sadtalker_from_txt2img")
        print(json.dumps({"image": image, "info": info}))  # noqa: T201
        return
    args = _inputs(req, req["option_names"])
    t0 = time.time()
    if action == "generate":
        video, history, info = client.predict(*args, api_name="/sadtalker_generate")
    else:
        job = client.submit(*args, api_name="/sadtalker_generate")
        deadline = time.time() + 600
        # job_count is 0 between jobs (textinfo keeps the last job's text); the tab sets it to 1
        # and textinfo to "SadTalker: frame n/N" once the render has started
        while time.time() < deadline and not job.done():
            st = _state(url)
            if st["job_count"] == 1 and "frame" in str(st["textinfo"]):
                break
            time.sleep(0.2)
        seen = _state(url)
        client.predict(api_name="/sadtalker_interrupt")
        video, history, info = job.result(timeout=600)
        info = f"{info}\n<!-- state before interrupt: {json.dumps(seen)} -->"
    out = {"video": _video_path(video), "history": history, "info": info, "s": time.time() - t0}
    print(json.dumps(out))  # noqa: T201


if __name__ == "__main__":
    main()
