"""The few gradio calls that differ between gradio 3.41 (A1111 1.10) and gradio 4.40 (Forge).

gradio 4 removed ``.style()`` (never used here) and renamed ``source=`` to ``sources=[...]``;
upload components hand over a path string instead of a temp file object.
"""

from __future__ import annotations

import os
from typing import Any

import gradio as gr

GRADIO_MAJOR = int(gr.__version__.split(".")[0])


def audio_inputs(label: str) -> tuple[Any, Any]:
    """(upload, microphone) speech inputs as file paths. gradio 4: one component with both
    sources and None as the second; gradio 3: one source per component, the microphone second."""
    if GRADIO_MAJOR >= 4:
        return gr.Audio(
            label=label,
            sources=["upload", "microphone"],
            type="filepath",
            elem_id="sadtalker_audio",
        ), None
    upload = gr.Audio(label=label, source="upload", type="filepath", elem_id="sadtalker_audio")
    mic = gr.Audio(
        label=f"{label} (record)", source="microphone", type="filepath", elem_id="sadtalker_mic"
    )
    return upload, mic


def image_input(label: str):
    """A picture upload that also takes a pasted image, handed over as PIL (no temp file moves)."""
    if GRADIO_MAJOR >= 4:
        return gr.Image(
            label=label, sources=["upload", "clipboard"], type="pil", elem_id="sadtalker_image"
        )
    return gr.Image(label=label, source="upload", type="pil", elem_id="sadtalker_image")


def file_path(value: Any) -> str | None:
    """The path of an uploaded file: gradio 4 gives a str, gradio 3 a temp file with ``.name``."""
    if value is None or value == "":
        return None
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, dict):
        return value.get("path") or value.get("name")
    return getattr(value, "name", None)
