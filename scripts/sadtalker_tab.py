"""AUTOMATIC1111 / Forge entry point: the SadTalker tab, its settings and its HTTP API.

The host imports every ``scripts/*.py`` with the extension folder on ``sys.path`` only during
that import, so the packages are imported here, at module level, whatever the folder's name.
Nothing is installed or downloaded here (``install.py`` does the former, the tab's Weights
section says how to do the latter). A failure shows as an error tab instead of a missing one.
"""

from __future__ import annotations

import html
import logging
import sys
import traceback
from pathlib import Path

log = logging.getLogger("sadtalker.webui")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    import sadtalker_core  # noqa: F401
    from sadtalker_webui import api, host, ui

    _import_error: str | None = None
except ImportError:  # a missing dependency: shown in the tab, logged once
    _import_error = traceback.format_exc()
    log.error("SadTalker: the extension could not be imported:\n%s", _import_error)

from modules import script_callbacks  # noqa: E402


def _error_tab(text: str):
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as tab:
        gr.HTML(
            "<h3>SadTalker could not build its tab</h3>"
            "<p>The console log has the same text. Run the webui once with network access so "
            "that the extension's install.py can install what is missing.</p>"
            f"<pre style='white-space: pre-wrap'>{html.escape(text)}</pre>"
        )
    return tab


def on_ui_tabs():
    if _import_error is not None:
        return [(_error_tab(_import_error), "SadTalker", "sadtalker")]
    try:
        return [(ui.build_tab(), "SadTalker", "sadtalker")]
    except Exception:  # the host would swallow it and drop the tab silently: show it instead
        text = traceback.format_exc()
        log.error("SadTalker: building the tab failed:\n%s", text)
        return [(_error_tab(text), "SadTalker", "sadtalker")]


def on_ui_settings():
    if _import_error is None:
        host.add_settings()


def on_app_started(demo, app):
    if _import_error is None:
        api.register(app)
        # SIGTERM kills the webui without Python's exit handlers, and its Ctrl-C handler leaves
        # through os._exit: a render in progress must not leave its partial .mp4 behind
        from sadtalker_core.io.video import discard_partials_on_signals

        discard_partials_on_signals()


script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_app_started(on_app_started)
