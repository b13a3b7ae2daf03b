"""The second round of the node pack in a real ComfyUI server (see tests/test_comfyui.py): Render to Video (streamed
MP4 in output/, a file-backed VIDEO that core Save Video takes, no file after Cancel), our
networks under ComfyUI's memory manager (POST /free then a second run), reference videos and
idle mode, the enhancer with a core UPSCALE_MODEL, auto_download from a local HTTP server and
offline, errors in /history, and every example workflow (API form; the UI form converts to it).

CPU only: a 256 px frame takes ~10 s, so every clip is 1-2 frames (0.05 s of speech = 1 frame).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import av
import pytest
from comfyui_support import REPO, ch, node_id, probe, ui_to_api
from PIL import Image

EXAMPLES = REPO / "example_workflows"
TIMEOUT = 400
DIFFUSION = ("CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler")


@pytest.fixture
def mirror(comfy_mirror):
    return comfy_mirror


@pytest.fixture
def server(comfy_server):
    """The session's ComfyUI server (tests/conftest.py): portrait.png, speech.wav (1 frame),
    speech_2.wav (2 frames), silence.wav, reference.mp4 (2 frames), reference_15.mp4, and
    RealESRGAN_x2plus.pth among its upscale models."""
    return comfy_server


def example(name: str, weights: Path, prefix: str, **images) -> dict:
    """An example API workflow pointed at the test inputs, the weights and the dlib detector;
    the diffusion part (text-to-image) replaced by LoadImage of the portrait."""
    graph = json.loads((EXAMPLES / "api" / f"{name}_api.json").read_text())
    for nid, node in list(graph.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind in DIFFUSION:
            del graph[nid]
        elif kind == "VAEDecode":
            graph[nid] = {"class_type": "LoadImage", "inputs": {"image": "portrait.png"}}
        elif kind == "SadTalkerLoadModels":
            inputs.update(detector="dlib", checkpoint_dir=str(weights))
        elif kind == "LoadImage":
            inputs["image"] = images.get("image", "portrait.png")
        elif kind == "LoadAudio":
            inputs["audio"] = images.get("audio", "speech.wav")
        elif kind == "LoadVideo":
            inputs["file"] = "reference.mp4"
        elif kind in ("SaveVideo", "SadTalkerRenderToVideo"):
            inputs["filename_prefix"] = f"{prefix}/{kind}"
    return graph


def loads_logged(server) -> int:
    return server.log_text().count("Requested to load SadTalkerNetworks")


# --------------------------------------------------------------------------------------------


def test_render_to_video_node_schema(server):
    info = server.object_info("SadTalkerRenderToVideo")["SadTalkerRenderToVideo"]
    assert info["output"] == ["VIDEO"] and info["output_node"] is True
    assert info["input"]["optional"]["upscale_model"][0] == "UPSCALE_MODEL"
    coeffs = server.object_info("SadTalkerAudioToCoeffs")["SadTalkerAudioToCoeffs"]["input"]
    assert "audio" in coeffs["optional"]
    assert coeffs["optional"]["pose_video"][0] == coeffs["optional"]["blink_video"][0] == "VIDEO"
    enhance = server.object_info("SadTalkerEnhance")["SadTalkerEnhance"]["input"]
    assert enhance["optional"]["upscale_model"][0] == "UPSCALE_MODEL"
    loader = server.object_info("SadTalkerLoadModels")["SadTalkerLoadModels"]["input"]
    assert loader["optional"]["auto_download"][0] == "BOOLEAN"


def test_long_speech_example_streams_to_video_then_free_and_rerun(server, weights_dir):
    graph = example("sadtalker_long_speech_to_video", weights_dir, "stream")
    render = node_id(graph, "SadTalkerRenderToVideo")
    # and into Get Video Components -> Create Video -> Save Video
    graph["20"] = {"class_type": "GetVideoComponents", "inputs": {"video": [render, 0]}}
    graph["21"] = {
        "class_type": "CreateVideo",
        "inputs": {"images": ["20", 0], "fps": ["20", 2], "audio": ["20", 1]},
    }
    graph["22"] = {
        "class_type": "SaveVideo",
        "inputs": {
            "video": ["21", 0],
            "filename_prefix": "stream/components",
            "format": "auto",
            "codec": "auto",
        },
    }
    res = server.run_workflow(graph, timeout=TIMEOUT)
    assert res.status == "success"
    ui = res.outputs[render]
    assert ui["animated"] == [True] and ui["images"][0]["type"] == "output"
    path = Path(server.output_dir) / ui["images"][0]["subfolder"] / ui["images"][0]["filename"]
    assert path.is_file() and path.suffix == ".mp4"
    frames, fps, rate, seconds = probe(str(path))
    assert (frames, fps, rate) == (1, 25.0, 16000)
    assert abs(seconds - 0.04) < 0.03  # the speech cut to the frames (AAC frame granularity)
    assert not list(path.parent.glob(".*partial*"))
    # Chained into core Save Video: it accepts our VIDEO and writes its own copy.
    saved = [f for f in res.files if Path(f) != path]
    assert len(saved) == 2 and all(probe(f)[:3] == (1, 25.0, 16000) for f in saved)

    # Our networks went through ComfyUI's memory manager ...
    before = loads_logged(server)
    assert before >= 1
    # ... so Unload Models (POST /free) unloads them, and the next run loads them again.
    server.request("POST", "/free", {"unload_models": True, "free_memory": True})
    time.sleep(2)
    again = copy.deepcopy(graph)
    again[node_id(graph, "SadTalkerAudioToCoeffs")]["inputs"]["seed"] = 7
    again[render]["inputs"]["filename_prefix"] = "stream/again"
    res2 = server.run_workflow(again, timeout=TIMEOUT)
    assert res2.status == "success"
    assert loads_logged(server) > before


def test_cancelled_render_to_video_leaves_no_file(server, weights_dir):
    graph = example(
        "sadtalker_long_speech_to_video", weights_dir, "cancelled", audio="speech_2.wav"
    )
    render = node_id(graph, "SadTalkerRenderToVideo")
    graph[render]["inputs"]["batch_size"] = 1

    def cancel_on_first_frame(msg: dict) -> None:
        if msg["type"] == "progress" and msg["data"]["node"] == render:
            server.interrupt()

    with pytest.raises(ch.WorkflowInterrupted):
        server.run_workflow(graph, timeout=TIMEOUT, on_event=cancel_on_first_frame)
    left = [p for p in Path(server.output_dir).rglob("*") if "cancelled" in str(p) and p.is_file()]
    assert not left  # not even the hidden partial file


def test_reference_video_example_and_idle_mode(server, weights_dir):
    graph = example("sadtalker_reference_video", weights_dir, "reference")
    res = server.run_workflow(graph, timeout=TIMEOUT)
    assert res.status == "success"
    assert probe(res.files[0])[0] == 1

    idle = copy.deepcopy(graph)
    coeffs = idle[node_id(graph, "SadTalkerAudioToCoeffs")]["inputs"]
    del coeffs["audio"]
    coeffs["idle_seconds"] = 0.04  # 1 frame
    idle[node_id(graph, "SadTalkerRenderToVideo")]["inputs"]["filename_prefix"] = "idle/x"
    res = server.run_workflow(idle, timeout=TIMEOUT)
    assert res.status == "success" and probe(res.files[0])[0] == 1

    no_audio = copy.deepcopy(idle)
    no_audio[node_id(graph, "SadTalkerAudioToCoeffs")]["inputs"]["idle_seconds"] = 0.0
    with pytest.raises(ch.NodeExecutionError, match="No audio") as err:
        server.run_workflow(no_audio, timeout=TIMEOUT)
    assert err.value.node_type == "SadTalkerAudioToCoeffs"


def test_text_to_image_example_with_enhancer_and_upscale_model(server, all_weights):
    graph = example("sadtalker_text_to_portrait", all_weights, "t2i")
    render = node_id(graph, "SadTalkerRenderToVideo")
    graph["90"] = {
        "class_type": "UpscaleModelLoader",
        "inputs": {"model_name": "RealESRGAN_x2plus.pth"},
    }
    graph[render]["inputs"].update(enhancer="gfpgan", upscale=2, upscale_model=["90", 0])
    res = server.run_workflow(graph, timeout=TIMEOUT)
    assert res.status == "success"
    with av.open(res.files[0]) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert frame.shape[1] == 2 * 256  # restored and enlarged twice


def test_silent_audio_is_reported_by_the_coefficient_node(server, weights_dir):
    graph = example("sadtalker_long_speech_to_video", weights_dir, "silent", audio="silence.wav")
    with pytest.raises(ch.NodeExecutionError) as err:
        server.run_workflow(graph, timeout=TIMEOUT)
    assert err.value.node_type == "SadTalkerAudioToCoeffs"
    assert "silent" in err.value.exception_message.lower()
    history = err.value.result.history["status"]["messages"]
    errors = [m[1] for m in history if m[0] == "execution_error"]
    assert errors and errors[0]["node_id"] == node_id(graph, "SadTalkerAudioToCoeffs")


def test_missing_weights_are_reported_by_the_loader(server, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    graph = example("sadtalker_long_speech_to_video", empty, "missing")
    graph[node_id(graph, "SadTalkerLoadModels")]["inputs"]["size"] = "512"
    with pytest.raises(ch.NodeExecutionError, match="SadTalker_V0.0.2_512") as err:
        server.run_workflow(graph, timeout=TIMEOUT)
    assert err.value.node_type == "SadTalkerLoadModels"
    assert err.value.node_id == node_id(graph, "SadTalkerLoadModels")


def _loader_only(size: str) -> dict:
    """Load Models (auto_download) -> Face Crop -> Preview Image: runs the loader cheaply."""
    return {
        "1": {
            "class_type": "SadTalkerLoadModels",
            "inputs": {
                "size": size,
                "detector": "dlib",
                "checkpoint_dir": "",
                "auto_download": True,
            },
        },
        "2": {"class_type": "LoadImage", "inputs": {"image": "portrait.png"}},
        "3": {
            "class_type": "SadTalkerFaceCrop",
            "inputs": {
                "models": ["1", 0],
                "image": ["2", 0],
                "preprocess": "crop",
                "face_index": 0,
            },
        },
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }


def test_auto_download_then_offline(server, mirror, weights_dir):
    """Runs last: it fills the server's models/sadtalker."""
    dest = server.base_dir / "models" / "sadtalker"
    res = server.run_workflow(_loader_only("256"), timeout=TIMEOUT)
    assert res.status == "success"
    names = {"SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar"}
    assert names <= {p.name for p in dest.iterdir()}
    for name in names:
        assert (dest / name).stat().st_size == (weights_dir / name).stat().st_size
    assert not list(dest.glob("*.part"))
    progress = [
        e["data"] for e in res.events if e["type"] == "progress" and e["data"]["node"] == "1"
    ]
    assert progress and progress[-1]["value"] > 0

    mirror.stop()  # offline
    t0 = time.monotonic()
    with pytest.raises(ch.NodeExecutionError) as err:
        server.run_workflow(_loader_only("512"), timeout=TIMEOUT)
    assert time.monotonic() - t0 < 30
    msg = err.value.exception_message
    assert err.value.node_type == "SadTalkerLoadModels"
    assert "SadTalker_V0.0.2_512.safetensors" in msg
    assert f"{mirror.url}/SadTalker_V0.0.2_512.safetensors" in msg
    assert str(dest) in msg


# --------------------------------------------------------------------------------------------
# Example workflows: UI form == API form, thumbnails


def test_every_example_has_api_form_and_thumbnail(server):
    uis = sorted(EXAMPLES.glob("*.json"))
    assert len(uis) >= 4
    for ui_path in uis:
        ui = json.loads(ui_path.read_text())
        api = json.loads((EXAMPLES / "api" / f"{ui_path.stem}_api.json").read_text())
        info = {n["type"]: server.object_info(n["type"])[n["type"]] for n in ui["nodes"]}
        expected = {
            k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()
        }
        assert ui_to_api(ui, info) == expected, ui_path.name
        with Image.open(ui_path.with_suffix(".jpg")) as thumb:
            assert thumb.format == "JPEG" and min(thumb.size) >= 128
