"""ComfyUI entry point of the SadTalker node pack (V3 schema: ``comfy_entrypoint``).

Outside ComfyUI (pytest, the CLI, linters) this file exports empty mappings and imports nothing
heavy; inside ComfyUI it imports the nodes unguarded so real errors show as "IMPORT FAILED". Only
one node API is exported there: ComfyUI prefers ``NODE_CLASS_MAPPINGS`` when both exist.
"""

WEB_DIRECTORY = "./web"

try:
    import comfy  # noqa: F401  (only present inside ComfyUI)
except ImportError:
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
else:
    from .nodes import comfy_entrypoint
    from .sadtalker_core.io.video import discard_partials_on_signals

    # ComfyUI dies on SIGTERM without Python's exit handlers: a render in progress must not
    # leave its partial .mp4 in output/ (custom nodes are imported on the main thread)
    discard_partials_on_signals()

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
