"""A minimal webui launch the way A1111 / Forge do it, around the stand-in ``modules``.

    python webui.py <extension folder> <port>

Loads ``<extension>/scripts/*.py`` with the extension folder on ``sys.path`` only during the
import (``modules/scripts.py``), runs the settings and ui_tabs callbacks, renders every tab in a
``gr.Tabs`` (``modules/ui.py``), enables the queue, launches on 127.0.0.1 without blocking, then
runs the app_started callbacks (``webui.py``) and adds ``/sdapi/v1/interrupt`` and
``/sdapi/v1/options`` (GET; POST sets only options without ``restrict_api``). Test-only routes:
``GET /stand-in/state`` (the host state, the tab's pipeline count, the number of network loads),
``POST /stand-in/settings`` (the Settings page's Apply: any option).
Prints ``READY <url>`` when serving.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from pathlib import Path

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


class LoadCounter(logging.Handler):
    """Counts the core's "loaded <network> from <file>" records (one per network built)."""

    count = 0

    def emit(self, record):
        if record.name.startswith("sadtalker_core") and record.getMessage().startswith("loaded "):
            LoadCounter.count += 1


def load_scripts(extension: Path) -> None:
    for path in sorted((extension / "scripts").glob("*.py")):
        saved = list(sys.path)
        sys.path = [str(extension), *sys.path]
        try:
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        finally:
            sys.path = saved


def main() -> None:
    extension, port = Path(sys.argv[1]), int(sys.argv[2])
    logging.getLogger().addHandler(LoadCounter())
    import gradio as gr
    from fastapi import Body
    from modules import paths, script_callbacks, shared  # noqa: F401  (paths: pickle checker)

    load_scripts(extension)
    script_callbacks.ui_settings_callback()
    for key, value in (json_opts := _settings()).items():
        shared.opts.set(key, value)
    interfaces = script_callbacks.ui_tabs_callback()
    with (
        gr.Blocks(analytics_enabled=False, title="Stable Diffusion") as demo,
        gr.Tabs(elem_id="tabs"),
    ):
        with gr.TabItem("txt2img", id="txt2img", elem_id="tab_txt2img"):
            gr.Textbox(label="Prompt")
        for interface, label, ifid in interfaces:
            with gr.TabItem(label, id=ifid, elem_id=f"tab_{ifid}"):
                interface.render()
    demo.queue(64)
    app, local_url, _ = demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=True
    )
    script_callbacks.app_started_callback(demo, app)

    @app.post("/sdapi/v1/interrupt")
    def interrupt():
        shared.state.interrupt()
        return {}

    @app.get("/sdapi/v1/options")
    def get_config():
        return {k: getattr(shared.opts, k) for k in shared.opts.data_labels}

    @app.post("/sdapi/v1/options")
    def set_config(req: dict = Body(...)):  # noqa: B008 (FastAPI's way)
        for k, v in req.items():
            shared.opts.set(k, v, is_api=True)

    @app.post("/stand-in/settings")
    def apply_settings(req: dict = Body(...)):  # noqa: B008
        """The Settings page's "Apply settings" (not restricted like /sdapi/v1/options)."""
        for k, v in req.items():
            shared.opts.set(k, v)
        return {k: getattr(shared.opts, k) for k in req}

    @app.get("/stand-in/state")
    def state():
        studio = sys.modules.get("sadtalker_webui.studio")
        safe = sys.modules["modules.safe"]
        return {
            **shared.state.dict(),
            "tabs": [label for _, label, _ in interfaces],
            "callback_errors": script_callbacks.errors,
            "settings": {k: v for k, v in shared.opts.data.items() if k.startswith("sadtalker")},
            "setting_sections": sorted(
                {str(i.section) for k, i in shared.opts.data_labels.items() if "sadtalker" in k}
            ),
            "opts_loaded": sorted(json_opts),
            "pipelines_built": studio.STUDIO.pipelines_built if studio else None,
            "network_loads": LoadCounter.count,
            "refused_by_pickle_checker": safe.refused,
        }

    print(f"READY {local_url}", flush=True)  # noqa: T201
    while True:
        time.sleep(3600)


def _settings() -> dict:
    """``config.json`` of the data folder (the webui's saved settings), if any."""
    import json
    import os

    path = Path(os.environ.get("SADTALKER_WEBUI_DATA", ".")) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


if __name__ == "__main__":
    main()
