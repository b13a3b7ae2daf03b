"""Today's ComfyUI (and the oldest supported) with the one frame loop: a trimmed reference
VIDEO drives exactly its frames, an UPSCALE_MODEL is shared with core Upscale Image under
ComfyUI's memory manager, Render to Video's live previews (first batch, every few, last), and
the node giving the same frames as the command line with the enhancer on. One server for the
session (tests/conftest.py ``comfy_server``); 256 px clips of 1-6 frames."""

from __future__ import annotations

import json
import re
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from comfyui_support import REPO, ch, host_version, node_id, probe, read_frames
from PIL import Image

from sadtalker_core.cli.main import main as cli_main

API = REPO / "example_workflows" / "api"
TIMEOUT = 400


def long_speech_graph(weights: Path, prefix: str, audio: str = "speech.wav") -> dict:
    """The long-speech example (Load Models -> Face Crop -> Coefficients -> Render to Video)
    on the test inputs, the dlib detector and ``weights``."""
    graph = json.loads((API / "sadtalker_long_speech_to_video_api.json").read_text())
    for node in graph.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "SadTalkerLoadModels":
            inputs.update(detector="dlib", checkpoint_dir=str(weights))
        elif kind == "LoadImage":
            inputs["image"] = "portrait.png"
        elif kind == "LoadAudio":
            inputs["audio"] = audio
        elif kind == "SadTalkerRenderToVideo":
            inputs["filename_prefix"] = prefix
    return {k: v for k, v in graph.items() if v["class_type"] != "SaveVideo"}


def test_trimmed_reference_video_drives_exactly_its_frames(comfy_server, weights_dir):
    if "Video Slice" not in comfy_server.object_info():
        pytest.skip(f"ComfyUI {'.'.join(map(str, host_version(comfy_server)))} has no Trim Video")
    graph = long_speech_graph(weights_dir, "frames/trimmed")
    graph["90"] = {"class_type": "LoadVideo", "inputs": {"file": "reference_15.mp4"}}
    graph["91"] = {  # frames 5..9 of 15 (25 fps): 0.2 s from 0.2 s
        "class_type": "Video Slice",
        "inputs": {"video": ["90", 0], "start_time": 0.2, "duration": 0.2, "strict_duration": True},
    }
    coeffs = node_id(graph, "SadTalkerAudioToCoeffs")
    graph[coeffs]["inputs"]["pose_video"] = ["91", 0]
    res = comfy_server.run_workflow(graph, timeout=TIMEOUT)

    # the reference extraction reports (frames done, frames in the video) on the node
    seen = {
        (e["data"]["value"], e["data"]["max"])
        for e in res.events
        if e["type"] == "progress" and e["data"]["node"] == coeffs
    }
    assert (5, 5) in seen, seen  # exactly the 5 trimmed frames were read
    assert not any(15 in pair for pair in seen), seen  # never the whole 15-frame file
    assert probe(res.files[0])[0] == 1  # 0.05 s of speech: one frame


def test_upscale_model_shared_with_core_upscale_image(comfy_server, all_weights):
    """Our Enhance node and core Upscale Image use the same UPSCALE_MODEL in one prompt: no
    device error, and (hosts whose upscale models have a ModelPatcher) ComfyUI loads it once:
    our node went through its memory manager, so the core node finds it loaded."""
    log_before = comfy_server.log_text()
    graph = {
        "1": {
            "class_type": "SadTalkerLoadModels",
            "inputs": {"size": "256", "detector": "dlib", "checkpoint_dir": str(all_weights)},
        },
        "2": {"class_type": "LoadImage", "inputs": {"image": "portrait.png"}},
        "3": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["2", 0],
                "upscale_method": "bilinear",
                "width": 256,
                "height": 256,
                "crop": "center",
            },
        },
        "4": {
            "class_type": "UpscaleModelLoader",
            "inputs": {"model_name": "RealESRGAN_x2plus.pth"},
        },
        "5": {
            "class_type": "SadTalkerEnhance",
            "inputs": {
                "models": ["1", 0],
                "frames": ["3", 0],
                "enhancer": "gfpgan",
                "upscale": 2,
                "batch_size": 4,
                "upscale_model": ["4", 0],
            },
        },
        "6": {
            "class_type": "ImageUpscaleWithModel",
            "inputs": {"upscale_model": ["4", 0], "image": ["3", 0]},
        },
        "7": {
            "class_type": "SaveImage",
            "inputs": {"images": ["5", 0], "filename_prefix": "frames/ours"},
        },
        "8": {
            "class_type": "SaveImage",
            "inputs": {"images": ["6", 0], "filename_prefix": "frames/core"},
        },
    }
    res = comfy_server.run_workflow(graph, timeout=TIMEOUT)
    assert res.status == "success"
    sizes = sorted(Image.open(f).size for f in res.files)
    assert sizes == [(512, 512), (512, 512)]  # both x2
    log = comfy_server.log_text()[len(log_before) :]
    assert "Expected all tensors to be on the same device" not in log
    loads = re.findall(r"Requested to load (\w+)", log)
    upscaler_loads = [name for name in loads if name != "SadTalkerNetworks"]
    if host_version(comfy_server) >= (0, 4):  # UPSCALE_MODEL carries a ModelPatcher
        assert len(upscaler_loads) == 1, loads  # loaded once, by whichever node ran first
    # ComfyUI's "Unload Models" then a rerun of both: still consistent
    comfy_server.request("POST", "/free", {"unload_models": True, "free_memory": True})
    for node in ("7", "8"):
        graph[node]["inputs"]["filename_prefix"] += "_again"
    graph["5"]["inputs"]["batch_size"] = 2  # not the cached result
    assert comfy_server.run_workflow(graph, timeout=TIMEOUT).status == "success"


def _run_watching_previews(server, graph: dict, node: str) -> list[tuple[str, int]]:
    """Queue ``graph`` with our own websocket reader: the node's progress values and preview
    pictures in the order they arrived, as [("progress", value) | ("preview", jpeg bytes)]."""
    seen: list = []
    ws = ch._WS("127.0.0.1", server.port, f"/ws?clientId={server.client_id}")

    def reader():
        try:
            while True:
                op, payload = ws.recv()
                if op == 8:
                    return
                if op == 1:
                    msg = json.loads(payload)
                    if msg["type"] == "progress" and msg["data"]["node"] == node:
                        seen.append(("progress", msg["data"]["value"]))
                elif op == 2 and len(payload) > 8:
                    event, image_type = struct.unpack(">II", payload[:8])
                    if event == 1:  # PREVIEW_IMAGE: image type (1 = JPEG), then the picture
                        seen.append(("preview", payload[8:]))
        except (OSError, ConnectionError, ValueError):
            return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        prompt_id = server.queue_prompt(graph)
        history = server.wait(prompt_id, TIMEOUT)
        assert history["status"]["status_str"] == "success", history["status"]
    finally:
        ws.close()
        thread.join(5)
    return seen


def test_render_to_video_previews_first_every_few_and_last(comfy_server, weights_dir):
    graph = long_speech_graph(weights_dir, "frames/previews", audio="speech_6.wav")
    render = node_id(graph, "SadTalkerRenderToVideo")
    graph[render]["inputs"]["batch_size"] = 1  # 6 batches of 1 frame
    seen = _run_watching_previews(comfy_server, graph, render)

    after = []  # the progress value each preview followed
    last = None
    for kind, value in seen:
        if kind == "progress":
            last = value
        else:
            after.append(last)
            with Image.open(__import__("io").BytesIO(value)) as picture:
                # the 256 px crop-mode frame (hosts may scale previews to their preview size)
                assert picture.format == "JPEG" and picture.size[0] == picture.size[1] >= 256
    assert after == [1, 5, 6]  # the first batch at once, every 4th, and the last


def test_node_and_command_line_give_the_same_frames_with_the_enhancer(
    comfy_server, all_weights, tmp_path
):
    graph = long_speech_graph(all_weights, "frames/enhanced", audio="speech_2.wav")
    render = node_id(graph, "SadTalkerRenderToVideo")
    graph[render]["inputs"].update(enhancer="gfpgan", upscale=1, crf=0)
    coeffs = graph[node_id(graph, "SadTalkerAudioToCoeffs")]["inputs"]
    node_file = comfy_server.run_workflow(graph, timeout=TIMEOUT).files[0]

    cli_file = tmp_path / "cli.mp4"
    rc = cli_main(
        [
            "--source_image", str(Path(comfy_server.input_dir) / "portrait.png"),
            "--driven_audio", str(Path(comfy_server.input_dir) / "speech_2.wav"),
            "--checkpoint_dir", str(all_weights),
            "--detector", "dlib",
            "--seed", str(coeffs["seed"]),
            "--pose_style", str(coeffs["pose_style"]),
            "--batch_size", str(graph[render]["inputs"]["batch_size"]),
            "--enhancer", "gfpgan",
            "--enhance_upscale", "1",
            "--crf", "0",
            "--out", str(cli_file),
        ]
    )  # fmt: skip
    assert rc == 0
    node_frames, cli_frames = read_frames(node_file), read_frames(str(cli_file))
    assert node_frames.shape == cli_frames.shape and len(node_frames) == 2  # 0.08 s: 2 frames
    diff = np.abs(node_frames.astype(int) - cli_frames.astype(int))
    assert diff.max() <= 1, diff.max()  # the same algorithm; at most rounding apart
