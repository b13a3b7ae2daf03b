"""The node pack inside a real ComfyUI server (the newest snapshot in ../shared/hosts, 0.33.0;
``COMFYUI_HOST_VERSION=0.3.64`` runs the same tests on the oldest supported one): registration and tooltips, a full
talking-head workflow (LoadImage + LoadAudio -> the four SadTalker nodes -> CreateVideo ->
SaveVideo), Cancel during rendering, errors, the example workflows; plus the pack root and the
host adapter imported without ComfyUI.

The server runs on the CPU with this test's own Python: ComfyUI's requirements are installed into
it once (``ensure_env``, ~60 s the first time; a stamp makes later runs a no-op), so no second
torch environment is built. Rendering costs ~10 s per 256 px frame on a CPU, so the clip is 0.12 s
long (3 frames), the cancelled run renders 2, and one server serves the whole session.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from unittest.mock import patch

import av
import numpy as np
import pytest
import torch
from comfyui_support import REPO, ch, node_id, ui_to_api

API_WORKFLOW = REPO / "example_workflows" / "api" / "sadtalker_talking_head_api.json"
UI_WORKFLOW = REPO / "example_workflows" / "sadtalker_talking_head.json"
NODE_IDS = (
    "SadTalkerLoadModels",
    "SadTalkerFaceCrop",
    "SadTalkerAudioToCoeffs",
    "SadTalkerRender",
    "SadTalkerEnhance",
)
FPS = 25
SIZE = 256  # render size of the workflow: output frames are 256 px wide in crop mode
WORKFLOW_TIMEOUT = 300  # s; a 3-frame clip takes ~40 s on 2 CPU cores


@pytest.fixture
def server(comfy_server):
    """The session's ComfyUI server (tests/conftest.py); its input/ holds a portrait, a blank
    picture and speech (speech_3.wav: 0.12 s x 25 fps = 3 frames)."""
    return comfy_server


def api_workflow(weights_dir: Path, image: str, prefix: str) -> dict:
    """The example API graph, pointed at the test's inputs, weights and the offline detector."""
    graph = json.loads(API_WORKFLOW.read_text())
    by_type = {node["class_type"]: node["inputs"] for node in graph.values()}
    by_type["SadTalkerLoadModels"].update(detector="dlib", checkpoint_dir=str(weights_dir))
    by_type["LoadImage"]["image"] = image
    by_type["LoadAudio"]["audio"] = "speech_3.wav"
    by_type["SaveVideo"]["filename_prefix"] = prefix
    return graph


# --------------------------------------------------------------------------------------------
# Registration


def test_nodes_registered_with_tooltips(server):
    for name in NODE_IDS:
        info = server.object_info(name)[name]
        assert info["category"] == "SadTalker"
        assert info["display_name"].startswith("SadTalker ")
        assert info["description"]
        assert len(info["output_tooltips"]) == len(info["output"])
        for section in ("required", "optional"):
            for inp, spec in info["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{name}.{inp} has no tooltip"

    render = server.object_info("SadTalkerRender")["SadTalkerRender"]
    assert render["input_order"]["required"] == [
        "models",
        "face",
        "coeffs",
        "batch_size",
        "precision",
        "blend",
        "pad_to_even",
    ]
    assert render["input"]["required"]["coeffs"][0] == "SADTALKER_COEFFS"
    assert render["output"] == ["IMAGE", "AUDIO", "FLOAT"]
    assert render["output_name"] == ["frames", "audio", "fps"]
    coeffs = server.object_info("SadTalkerAudioToCoeffs")["SadTalkerAudioToCoeffs"]
    assert coeffs["input"]["required"]["seed"][1]["control_after_generate"] is True


# --------------------------------------------------------------------------------------------
# The talking-head workflow


def test_talking_head_workflow(server, weights_dir):
    graph = api_workflow(weights_dir, "people_0.png", "sadtalker/people")
    res = server.run_workflow(graph, timeout=WORKFLOW_TIMEOUT)

    assert res.status == "success"
    assert len(res.files) == 1 and res.files[0].endswith(".mp4")
    with av.open(res.files[0]) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
        assert audio.rate == 16000  # the render node's AUDIO: the 16 kHz stage waveform
        assert float(video.average_rate) == FPS
    assert len(frames) == 3  # round(0.12 s x 25 fps)
    h, w = frames[0].shape[:2]
    assert w == SIZE and h % 2 == 0  # crop mode: 256 px wide, padded to even for H.264
    assert all(f.std() > 5 for f in frames)  # rendered pictures, not blank frames

    render = node_id(graph, "SadTalkerRender")
    progress = [
        e["data"] for e in res.events if e["type"] == "progress" and e["data"]["node"] == render
    ]
    assert progress, "the render node sent no progress"
    assert progress[-1]["value"] == progress[-1]["max"] == 3  # one update per batch of frames


def test_enhance_node_restores_and_enlarges_the_frames(server, all_weights):
    graph = api_workflow(all_weights, "people_0.png", "sadtalker/enhanced")
    enhance = "9"
    graph[enhance] = {
        "class_type": "SadTalkerEnhance",
        "inputs": {
            "models": [node_id(graph, "SadTalkerLoadModels"), 0],
            "frames": [node_id(graph, "SadTalkerRender"), 0],
            "enhancer": "gfpgan",
            "upscale": 2,
            "batch_size": 4,
        },
    }
    graph[node_id(graph, "CreateVideo")]["inputs"]["images"] = [enhance, 0]
    res = server.run_workflow(graph, timeout=WORKFLOW_TIMEOUT)

    assert res.status == "success" and len(res.files) == 1
    with av.open(res.files[0]) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 3
    assert frames[0].shape[1] == 2 * SIZE  # enlarged twice, as the official enhancer
    progress = [
        e["data"] for e in res.events if e["type"] == "progress" and e["data"]["node"] == enhance
    ]
    assert progress and progress[-1]["value"] == progress[-1]["max"] == 3


def test_cancel_interrupts_the_render(server, weights_dir):
    graph = api_workflow(weights_dir, "people_0.png", "sadtalker/cancelled")
    graph[node_id(graph, "SadTalkerAudioToCoeffs")]["inputs"]["seed"] = 1  # not the cached run
    graph[node_id(graph, "SadTalkerRender")]["inputs"]["batch_size"] = 1
    render = node_id(graph, "SadTalkerRender")

    def cancel_on_first_frame(msg: dict) -> None:
        if msg["type"] == "progress" and msg["data"]["node"] == render:
            server.interrupt()

    with pytest.raises(ch.WorkflowInterrupted) as err:
        server.run_workflow(graph, timeout=WORKFLOW_TIMEOUT, on_event=cancel_on_first_frame)
    kinds = [m[0] for m in err.value.result.history["status"]["messages"]]
    assert "execution_interrupted" in kinds and "execution_error" not in kinds
    assert not list(Path(server.output_dir).glob("sadtalker/cancelled*"))


def test_no_face_is_reported_by_the_face_node(server, weights_dir):
    graph = api_workflow(weights_dir, "blank.png", "sadtalker/blank")
    with pytest.raises(ch.NodeExecutionError, match="No face") as err:
        server.run_workflow(graph, timeout=WORKFLOW_TIMEOUT)
    assert err.value.node_type == "SadTalkerFaceCrop"
    assert err.value.exception_type.endswith("NoFaceDetectedError")


def test_invalid_inputs_are_refused_before_running(server, weights_dir, tmp_path):
    graph = api_workflow(weights_dir, "people_0.png", "sadtalker/invalid")
    bad_dir = copy.deepcopy(graph)
    bad_dir[node_id(graph, "SadTalkerLoadModels")]["inputs"]["checkpoint_dir"] = str(
        tmp_path / "missing"
    )
    with pytest.raises(ch.PromptValidationError, match="is not a folder"):
        server.queue_prompt(bad_dir)
    bad_angle = copy.deepcopy(graph)
    bad_angle[node_id(graph, "SadTalkerAudioToCoeffs")]["inputs"]["input_yaw"] = "0, left"
    with pytest.raises(ch.PromptValidationError, match="input_yaw must be numbers"):
        server.queue_prompt(bad_angle)


# --------------------------------------------------------------------------------------------
# Example workflows


def test_ui_workflow_matches_api_workflow(server):
    ui = json.loads(UI_WORKFLOW.read_text())
    api = json.loads(API_WORKFLOW.read_text())
    info = {n["type"]: server.object_info(n["type"])[n["type"]] for n in ui["nodes"]}
    expected = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    assert ui_to_api(ui, info) == expected


# --------------------------------------------------------------------------------------------
# Outside ComfyUI


def load_host_with_stubs(models_dir: Path):
    """nodes/_host.py imported against minimal stand-ins of comfy.* and folder_paths; returns
    (module, the stub ProgressBar's recorded updates)."""
    registered: dict[str, list[str]] = {}
    updates: list[tuple[int, int]] = []

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            updates.append((value, total) if preview is None else (value, total, preview))

    folder_paths = ModuleType("folder_paths")
    folder_paths.models_dir = str(models_dir)
    folder_paths.add_model_folder_path = lambda name, path: registered.setdefault(name, [path])
    folder_paths.get_folder_paths = lambda name: list(registered[name])
    comfy = ModuleType("comfy")
    comfy.utils = ModuleType("comfy.utils")
    comfy.utils.ProgressBar = ProgressBar
    comfy.model_management = ModuleType("comfy.model_management")
    stubs = {
        "comfy": comfy,
        "comfy.utils": comfy.utils,
        "comfy.model_management": comfy.model_management,
        "folder_paths": folder_paths,
    }
    comfy.model_patcher = ModuleType("comfy.model_patcher")

    class ModelPatcher:  # what the host relies on: the wrapped module and the two devices
        def __init__(self, model, load_device, offload_device):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device

    comfy.model_patcher.ModelPatcher = ModelPatcher
    comfy.model_management.unet_offload_device = lambda: torch.device("cpu")
    loaded: list = []
    comfy.model_management.loaded_models = lambda: list(loaded)
    comfy.model_management.free_memory = lambda *a, **k: []

    def load_models_gpu(patchers, memory_required=0, force_full_load=False):
        assert force_full_load  # never a partial load: our layers are not comfy.ops
        loaded.extend(p for p in patchers if p not in loaded)

    comfy.model_management.load_models_gpu = load_models_gpu
    stubs["comfy.model_patcher"] = comfy.model_patcher
    api = ModuleType("comfy_api")  # the V3 schema names the host re-exports to the nodes
    api.latest = ModuleType("comfy_api.latest")
    api.latest.ComfyExtension = api.latest.io = api.latest.ui = object
    stubs.update({"comfy_api": api, "comfy_api.latest": api.latest})
    # The pack as a package whose sadtalker_core is the one already imported (no second copy).
    import sadtalker_core.models.download

    pack = ModuleType("sadtalker_pack_stub")
    pack.__path__ = [str(REPO)]
    nodes_pkg = ModuleType("sadtalker_pack_stub.nodes")
    nodes_pkg.__path__ = [str(REPO / "nodes")]
    stubs.update(
        {
            "sadtalker_pack_stub": pack,
            "sadtalker_pack_stub.nodes": nodes_pkg,
            "sadtalker_pack_stub.sadtalker_core": sadtalker_core,
            "sadtalker_pack_stub.sadtalker_core.models": sadtalker_core.models,
            "sadtalker_pack_stub.sadtalker_core.models.download": sadtalker_core.models.download,
        }
    )
    spec = importlib.util.spec_from_file_location(
        "sadtalker_pack_stub.nodes._host", REPO / "nodes/_host.py"
    )
    module = importlib.util.module_from_spec(spec)
    with patch.dict(sys.modules, stubs):
        spec.loader.exec_module(module)
    return module, updates


def test_host_conversions(tmp_path):
    host, updates = load_host_with_stubs(tmp_path)
    assert host.checkpoint_dirs("") == [str(tmp_path / "sadtalker")]
    assert host.checkpoint_dirs(" /ckpt ") == ["/ckpt", str(tmp_path / "sadtalker")]

    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (n, 5, 7, 3), dtype=np.uint8) for n in (2, 1)]
    frames = host.frames_to_image(iter(batches), 3, pad_to_even=True)
    assert frames.shape == (3, 6, 8, 3) and frames.dtype == torch.float32  # 5x7 -> 6x8
    expected = np.concatenate(batches).astype(np.float32) / 255.0
    np.testing.assert_allclose(frames[:, :5, :7].numpy(), expected, atol=1e-7)
    np.testing.assert_array_equal(frames[:, 5], frames[:, 4])  # last row repeated
    np.testing.assert_array_equal(frames[:, :, 7], frames[:, :, 6])  # last column repeated
    assert host.frames_to_image(iter(batches), 3, pad_to_even=False).shape == (3, 5, 7, 3)
    with pytest.raises(RuntimeError, match="produced 3 frames; 4 were expected"):
        host.frames_to_image(iter(batches), 4, pad_to_even=False)

    audio = host.audio_to_comfy(np.arange(160, dtype=np.float32), 16000)
    assert audio["waveform"].shape == (1, 1, 160) and audio["sample_rate"] == 16000

    progress = host.ProgressCallback()
    progress(2, 5)
    progress(5, 5)
    assert updates == [(2, 5), (5, 5)]

    samples, rate = host.audio_from_comfy(
        {"waveform": torch.ones(1, 2, 8) * torch.tensor([[[0.5], [-0.5]]]), "sample_rate": 8000}
    )
    assert samples.shape == (2, 8) and samples.dtype == np.float32 and rate == 8000
    mono, _ = host.audio_from_comfy({"waveform": torch.zeros(1, 1, 8), "sample_rate": 8000})
    assert mono.shape == (8,)
    assert host.first_image(torch.ones(2, 4, 6, 4)).shape == (4, 6, 3)


def test_cache_entries_become_comfy_models_until_evicted(tmp_path):
    from sadtalker_core.models import MODELS

    host, _ = load_host_with_stubs(tmp_path)
    cpu = torch.device("cpu")
    net = MODELS.get(("test_comfy_memory", 1), lambda: torch.nn.Linear(3, 3), cpu, name="probe")
    try:
        with host.MEMORY.stage(cpu, 1 << 20):
            pass
        mine = [p for p in host.MEMORY.patchers(cpu) if p.model[0] is net]
        assert len(mine) == 1
        patcher = mine[0]
        assert isinstance(patcher.model, host.SadTalkerNetworks)  # bookkeeping on the holder
        assert patcher.load_device == cpu and patcher.offload_device == cpu
        assert host.MEMORY.patchers(cpu).count(patcher) == 1  # the same patcher next time
        # all-or-nothing: a partial unload frees nothing, so ComfyUI unloads the whole holder
        assert host._Patcher.partially_unload(patcher, cpu, 123) == 0
        # today's ComfyUI passes force_patch_weights too
        assert host._Patcher.partially_unload(patcher, cpu, 123, force_patch_weights=True) == 0
    finally:
        MODELS.evict([("test_comfy_memory", 1)])
    assert not [p for p in host.MEMORY.patchers(cpu) if p.model[0] is net]
    assert ("test_comfy_memory", 1) not in host.MEMORY._patchers


def test_live_preview_every_few_batches(tmp_path):
    host, updates = load_host_with_stubs(tmp_path)
    progress = host.ProgressCallback()
    batch = np.zeros((2, 8, 6, 3), np.uint8)
    for done in range(1, 7):  # 6 batches: previews on the 1st, the 5th and the last
        progress(done, 6)
        progress.on_batch(batch, done, 6)
    previews = [u for u in updates if len(u) == 3]
    assert [u[0] for u in previews] == [1, 5, 6]
    kind, picture, size = previews[0][2]
    assert kind == "JPEG" and picture.size == (6, 8) and size == host.PREVIEW_SIZE


def test_pack_root_without_comfyui_exports_nothing():
    spec = importlib.util.spec_from_file_location(
        "sadtalker_pack_root", REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    module = importlib.util.module_from_spec(spec)
    with patch.dict(sys.modules, {"comfy": None}):  # None: `import comfy` raises ImportError
        spec.loader.exec_module(module)
        loaded = [m for m in sys.modules if m.startswith("sadtalker_pack_root.")]
    assert module.NODE_CLASS_MAPPINGS == {}
    assert module.NODE_DISPLAY_NAME_MAPPINGS == {}
    assert module.WEB_DIRECTORY == "./web"
    assert loaded == []  # the node modules (and torch-heavy core) are not imported


# --------------------------------------------------------------------------------------------
# Every option of the core's schema, as a node input with the schema's bounds

# Inputs whose name differs from the option's: the names the V1 nodes were saved with.
INPUT_OPTION = {
    ("SadTalkerEnhance", "upscale"): "enhance_upscale",
    ("SadTalkerEnhance", "batch_size"): "enhance_batch_size",
    ("SadTalkerRenderToVideo", "upscale"): "enhance_upscale",
}
# Options shown as a socket instead of a widget.
SOCKETS = {"background_enhancer": ("UPSCALE_MODEL", "upscale_model")}


def test_every_schema_option_is_a_node_input_with_the_same_bounds(server):
    from sadtalker_core.options import BY_NAME, OPTIONS

    nodes = (*NODE_IDS, "SadTalkerRenderToVideo")
    infos = {n: server.object_info(n)[n] for n in nodes}
    found: dict[str, list] = {o.name: [] for o in OPTIONS}
    for node, info in infos.items():
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                option = INPUT_OPTION.get((node, name), name)
                if option in found:
                    found[option].append((node, name, spec))
    for o in OPTIONS:
        if o.name in SOCKETS:
            kind, name = SOCKETS[o.name]
            assert any(
                info["input"].get("optional", {}).get(name, [None])[0] == kind
                for info in infos.values()
            ), o.name
            continue
        assert found[o.name], f"option {o.name} is an input of no node"
        for node, name, spec in found[o.name]:
            kind, opts = spec[0], spec[1]
            where = f"{node}.{name} ({o.name})"
            assert opts.get("tooltip"), where
            if kind == "INT" and o.choices:  # a run of whole numbers shown as a number widget
                assert [opts["min"], opts["max"]] == [min(o.choices), max(o.choices)], where
                assert list(o.choices) == list(range(opts["min"], opts["max"] + 1)), where
                assert opts["default"] in (o.default, o.stage_default), where
            elif o.choices:
                choices = kind if isinstance(kind, list) else opts.get("options")
                allowed = {tuple(map(str, o.choices)), tuple(map(str, o.shown_choices))}
                assert tuple(choices) in allowed, where
                assert str(opts["default"]) in {str(o.default), str(o.stage_default)} | (
                    {choices[0]} if o.default is None else set()
                ), where
            elif o.type is bool:
                assert kind == "BOOLEAN" and opts["default"] in (o.default, o.stage_default), where
            elif o.type is tuple:
                assert kind == "STRING", where
            else:
                assert kind == ("INT" if o.type is int else "FLOAT"), where
                assert (opts["min"], opts["max"]) == (o.min, o.max), where
                default = 0 if o.default is None else o.default
                assert opts["default"] in (default, o.stage_default), where
    assert set(found) == set(BY_NAME)
