"""ComfyUI nodes of the pack in the V3 schema (``comfy_api.latest``): the extension that lists
them, and ``comfy_entrypoint`` that ComfyUI calls (relative imports only)."""

from __future__ import annotations

from ._host import ComfyExtension, io
from .audio import SadTalkerAudioToCoeffs
from .enhance import SadTalkerEnhance
from .face import SadTalkerFaceCrop
from .loaders import SadTalkerLoadModels
from .render import SadTalkerRender, SadTalkerRenderToVideo

NODES: list[type[io.ComfyNode]] = [
    SadTalkerLoadModels,
    SadTalkerFaceCrop,
    SadTalkerAudioToCoeffs,
    SadTalkerRender,
    SadTalkerRenderToVideo,
    SadTalkerEnhance,
]


class SadTalkerExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> SadTalkerExtension:
    return SadTalkerExtension()


__all__ = ["NODES", "SadTalkerExtension", "comfy_entrypoint"]
