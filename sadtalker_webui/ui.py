"""The SadTalker tab: inputs, every option with a one-line hint, Generate/Interrupt, the video,
the history and the error text. Runs through the host's GPU queue; progress and interrupt go
through ``shared.state`` and gradio's progress bar."""

from __future__ import annotations

import html
import logging
from typing import Any

import gradio as gr

from sadtalker_core import ModelNotFoundError, SadTalkerError, check_weights

from . import compat, host
from .options import OPTIONS, Option, OptionError
from .studio import STUDIO, Result

log = logging.getLogger(__name__)

FILE_INPUTS = (
    "source_image",
    "driven_audio",
    "driven_mic",
    "driven_file",
    "ref_pose",
    "ref_eyeblink",
)
STAGES = {
    "start": "Loading the networks",
    "reference": "Reading the reference video",
    "extract": "Face found, computing the motion",
    "coefficients": "Motion ready, rendering",
}


def _control(o: Option):
    """The gradio control of one option, its hint as ``info``."""
    kw: dict[str, Any] = {"label": o.label, "info": o.hint, "elem_id": f"sadtalker_{o.name}"}
    if o.kind == "bool":
        return gr.Checkbox(value=o.default, **kw)
    if o.kind == "choice":
        choices = [str(c) for c in o.choices]
        if len(choices) <= 5:
            return gr.Radio(choices=choices, value=str(o.default), **kw)
        return gr.Dropdown(choices=choices, value=str(o.default), **kw)
    if o.kind == "angles":
        return gr.Textbox(value="", placeholder="e.g. 0, 20, -20", **kw)
    if o.slider:
        lo, hi, step = o.bounds
        return gr.Slider(minimum=lo, maximum=hi, step=step, value=o.default, **kw)
    return gr.Number(value=o.default, precision=0 if o.kind == "int" else None, **kw)


def error_html(e: BaseException) -> str:
    text = str(e)
    if isinstance(e, ModelNotFoundError):
        text += (
            f"\nPut the files into {host.weights_dir()} (Settings > SadTalker > Weights folder), "
            "or download them: python -m sadtalker_core download-weights "
            f'--checkpoint_dir "{host.weights_dir()}"'
        )
    return (
        "<div class='error sadtalker-error' style='white-space: pre-wrap'>"
        f"{html.escape(type(e).__name__)}: {html.escape(text)}</div>"
    )


def result_html(r: Result) -> str:
    sound = "with sound" if r.has_audio else "no sound"
    return (
        f"<p class='sadtalker-result'>{r.frames} frames at {r.fps:g} fps = {r.seconds:.2f} s, "
        f"{sound}. Saved to <code>{html.escape(str(r.path))}</code></p>"
    )


def history_html() -> str:
    if not STUDIO.history:
        return "<p class='sadtalker-history'>No results yet.</p>"
    rows = "".join(
        f"<li><code>{html.escape(str(r.path))}</code> ({r.seconds:.2f} s, {r.created})</li>"
        for r in STUDIO.history
    )
    return f"<div class='sadtalker-history'><b>Last results</b><ol>{rows}</ol></div>"


def weights_html() -> str:
    dirs = STUDIO.checkpoint_dirs()
    rows = []
    with host.torch_own_loader():
        reports = check_weights(dirs)
    for r in reports:
        spec = r.spec
        where = r.path if r.status == "found" else (r.reason or spec.role)
        rows.append(
            f"<tr><td>{html.escape(spec.name)}</td><td>{html.escape(r.status)}</td>"
            f"<td>{html.escape(str(where or ''))}</td></tr>"
        )
    searched = ", ".join(html.escape(str(d)) for d in dirs)
    return (
        f"<p>Searched: {searched}. Put missing files into <code>{host.weights_dir()}</code>.</p>"
        f"<table><tr><th>file</th><th>status</th><th>where / why</th></tr>{''.join(rows)}</table>"
    )


def _last_image(tab: str):
    path = host.last_generated_image(tab)
    if path is None:
        return gr.update(), f"<p>No {tab} picture found in the host's output folder yet.</p>"
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB"), f"<p>Using {html.escape(str(path))}</p>"


def _generate(progress=gr.Progress(), *args):  # noqa: B008 (gradio injects the tracker)
    files = dict(zip(FILE_INPUTS, args[: len(FILE_INPUTS)]))
    values = dict(zip((o.name for o in OPTIONS), args[len(FILE_INPUTS) :]))
    audio = files["driven_audio"] or files["driven_mic"] or compat.file_path(files["driven_file"])
    st = host.state()
    st.job_count, st.textinfo = 1, "SadTalker"

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage == "render":
            st.sampling_step, st.sampling_steps = done, total
            st.textinfo = f"SadTalker: frame {done}/{total}"
            progress((done, total), desc="Rendering frames", unit="frames")
        else:
            st.textinfo = f"SadTalker: {STAGES.get(stage, stage)}"
            progress(0.0, desc=STAGES.get(stage, stage))

    try:
        result = STUDIO.generate(
            files["source_image"],
            audio,
            values,
            ref_eyeblink=compat.file_path(files["ref_eyeblink"]),
            ref_pose=compat.file_path(files["ref_pose"]),
            progress=on_progress,
            should_cancel=host.is_interrupted,
        )
    except (SadTalkerError, OptionError) as e:
        log.info("SadTalker: %s", e)
        return gr.update(), history_html(), error_html(e)
    return str(result.path), history_html(), result_html(result)


def build_tab() -> gr.Blocks:
    """The tab's Blocks (returned to ``on_ui_tabs``)."""
    controls = {}
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row(equal_height=False):
            with gr.Column(variant="panel"):
                image = compat.image_input("Source image (a portrait with a visible face)")
                with gr.Row():
                    from_txt2img = gr.Button("Use the last txt2img image")
                    from_img2img = gr.Button("Use the last img2img image")
                audio, mic = compat.audio_inputs("Driven audio (speech)")
                with gr.Accordion("Audio from any file, reference videos", open=False):
                    audio_file = gr.File(
                        label="Driven audio from a file (mp3, m4a, or the sound of a video)"
                    )
                    ref_pose = gr.File(label="Reference video: copy its head motion")
                    ref_eyeblink = gr.File(label="Reference video: copy its eye blinks")
            with gr.Column(variant="panel"):
                for o in OPTIONS:
                    if o.basic:
                        controls[o.name] = _control(o)
                with gr.Accordion("Advanced", open=False):
                    for o in OPTIONS:
                        if not o.basic:
                            controls[o.name] = _control(o)
                with gr.Row():
                    generate = gr.Button(
                        "Generate", variant="primary", elem_id="sadtalker_generate"
                    )
                    stop = gr.Button("Interrupt", elem_id="sadtalker_interrupt")
                video = gr.Video(
                    label="Result", format="mp4", interactive=False, elem_id="sadtalker_video"
                )
                info = gr.HTML(elem_id="sadtalker_info")
                history = gr.HTML(history_html(), elem_id="sadtalker_history")
                with gr.Accordion("Weights", open=False):
                    check = gr.Button("Check the weights folder")
                    weights = gr.HTML()
        mic_or_none = mic if mic is not None else gr.State(None)
        inputs = [image, audio, mic_or_none, audio_file, ref_pose, ref_eyeblink]
        inputs += [controls[o.name] for o in OPTIONS]
        generate.click(
            fn=host.gpu_call(_generate, extra_outputs=[gr.update(), gr.update()]),
            inputs=inputs,
            outputs=[video, history, info],
            api_name="sadtalker_generate",
        )
        stop.click(
            fn=host.interrupt, inputs=[], outputs=[], queue=False, api_name="sadtalker_interrupt"
        )
        check.click(fn=weights_html, inputs=[], outputs=[weights], api_name="sadtalker_weights")
        for button, source in ((from_txt2img, "txt2img"), (from_img2img, "img2img")):
            button.click(
                fn=lambda source=source: _last_image(source),
                inputs=[],
                outputs=[image, info],
                api_name=f"sadtalker_from_{source}",
            )
    return tab
