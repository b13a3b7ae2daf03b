"""ComfyUI entry point of the SadTalker node pack.

Outside ComfyUI (pytest, the CLI, linters) this file exports empty mappings and imports nothing
heavy; inside ComfyUI it imports the nodes unguarded so real errors show as "IMPORT FAILED".
"""

WEB_DIRECTORY = "./web"

try:
    import comfy  # noqa: F401  (only present inside ComfyUI)
except ImportError:
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
