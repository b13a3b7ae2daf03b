"""The ComfyUI frontend (served by the session's real ComfyUI server with this pack) in headless
Chromium: every UI-format example workflow loads with every node known (no missing-node dialog,
no red "missing" node) and its SadTalker nodes placed.

Needs the Debian chromium (/usr/bin/chromium) and the ``playwright`` package; skipped otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from comfyui_support import REPO, host_version

CHROMIUM = "/usr/bin/chromium"
EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))

playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip("no /usr/bin/chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def server(comfy_server):
    """The session's ComfyUI server (tests/conftest.py)."""
    return comfy_server


@pytest.fixture(scope="module")
def page(server):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(server.url, wait_until="domcontentloaded")
            page.wait_for_function(
                "() => window.app && window.app.graph && window.LiteGraph", timeout=120_000
            )
            yield page
        finally:
            browser.close()


def load(page, workflow: dict) -> None:
    """Load a UI workflow as the Load button does, and wait until its nodes are on the canvas
    (the frontend may still be restoring its previous workflow right after start)."""
    for _ in range(3):
        page.evaluate("(wf) => window.app.loadGraphData(wf)", workflow)
        try:
            page.wait_for_function(
                "(n) => window.app.graph._nodes.length === n",
                arg=len(workflow["nodes"]),
                timeout=10_000,
            )
            break
        except playwright_api.TimeoutError:
            continue
    page.wait_for_timeout(1000)  # dialogs open after the load


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_workflow_loads_without_missing_nodes(page, path):
    workflow = json.loads(path.read_text())
    load(page, workflow)
    loaded = page.evaluate(
        """() => window.app.graph._nodes.map(n => ({
            type: n.type, missing: !LiteGraph.registered_node_types[n.type],
            errors: !!n.has_errors
        }))"""
    )
    assert sorted(n["type"] for n in loaded) == sorted(n["type"] for n in workflow["nodes"])
    assert not [n for n in loaded if n["missing"]]
    # no SadTalker node flagged (core loaders may be: the test server has no SD checkpoint)
    assert not [n for n in loaded if n["errors"] and n["type"].startswith("SadTalker")]
    text = page.evaluate("() => document.body.innerText").lower()
    for dialog in ("nodes are missing", "were not found", "missing models"):
        assert dialog not in text, text[:2000]
    # The workflows were saved with the V1 nodes: each SadTalker widget keeps its saved value
    # under the V3 schema (same names, same order, values within the new choices and bounds).
    widgets = page.evaluate(
        """() => Object.fromEntries(window.app.graph._nodes.map(n =>
            [n.id, (n.widgets || []).map(w => w.value)]))"""
    )
    for node in workflow["nodes"]:
        if node["type"].startswith("SadTalker"):
            saved = node.get("widgets_values") or []
            assert widgets[str(node["id"])][: len(saved)] == saved, node["type"]


def test_the_check_sees_a_missing_node(page, server):
    """Control: the same check flags a workflow with an unknown node type."""
    workflow = json.loads(EXAMPLES[0].read_text())
    workflow["nodes"][0]["type"] = "SadTalkerNoSuchNode"
    load(page, workflow)
    text = page.evaluate("() => document.body.innerText").lower()
    missing = page.evaluate(
        "() => window.app.graph._nodes.filter(n => !LiteGraph.registered_node_types[n.type]).length"
    )
    assert missing == 1
    if host_version(server) < (0, 4):  # frontend 1.27 says so in a dialog (newer: a side panel)
        assert "were not found" in text
    page.keyboard.press("Escape")


def _wait_for_the_queued_prompt(server, timeout: float = 300) -> dict:
    """The history entry of the one prompt the page queued, once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, history = server.request("GET", "/history")
        done = [h for h in history.values() if h.get("status", {}).get("completed") is not None]
        if done:
            return done[-1]
        time.sleep(1)
    raise AssertionError(f"the queued prompt did not finish in {timeout} s")


def test_queued_from_the_page_both_video_nodes_play_the_mp4(page, server, weights_dir):
    """Long-speech example queued from the page (detector dlib, test weights): the prompt
    succeeds, and both Render to Video and Save Video after it play the written MP4."""
    workflow = json.loads(
        (REPO / "example_workflows" / "sadtalker_long_speech_to_video.json").read_text()
    )
    for node in workflow["nodes"]:
        if node["type"] == "SadTalkerLoadModels":
            node["widgets_values"][1:3] = ["dlib", str(weights_dir)]
        elif node["type"] == "SadTalkerRenderToVideo":
            node["widgets_values"][3] = "browser/queued"  # filename_prefix
            render = node["id"]
        elif node["type"] == "SaveVideo":
            node["widgets_values"][0] = "browser/saved"
    load(page, workflow)
    server.request("POST", "/history", {"clear": True})
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    entry = _wait_for_the_queued_prompt(server)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"]
    assert entry["outputs"][str(render)]["images"][0]["filename"].startswith("queued")
    page.wait_for_function(
        """() => [...document.querySelectorAll('video')].some(v =>
            (v.currentSrc || v.src || '').includes('saved'))""",
        timeout=60_000,
    )
    # Render to Video plays its MP4 too, not its last live preview (web/js/sadtalker.js: newer
    # frontends keep a node's previews over its output until the node runs again)
    try:
        page.wait_for_function(
            """() => [...document.querySelectorAll('video')].some(v =>
                    (v.currentSrc || v.src || '').includes('queued'))""",
            timeout=60_000,
        )
    except playwright_api.TimeoutError:
        raise AssertionError(f"Render to Video does not play its MP4: {_shown(page, render)}") from None


def _shown(page, node_id: int) -> dict:
    """What the page holds for a node's output: video sources, the node's images, its output and
    preview entries in the app (for the failure message)."""
    return page.evaluate(
        """(id) => {
            const node = window.app.graph.getNodeById(id);
            const key = String(id);
            return {
                videos: [...document.querySelectorAll('video')].map(v => v.currentSrc || v.src),
                imgs: (node.imgs || []).map(i => i.src),
                output: (window.app.nodeOutputs || {})[key] || null,
                previews: (window.app.nodePreviewImages || {})[key] || null,
            };
        }""",
        node_id,
    )
