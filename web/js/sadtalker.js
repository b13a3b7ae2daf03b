// ComfyUI-SadTalker: the frontend part of the pack.
//
// Render to Video sends a frame of the clip as a live preview while it runs, then shows its MP4 as
// its output. Newer frontends (1.4x) show a node's live previews in preference to its output until
// the node runs again, so the node would keep showing a still frame. Once such a node has its
// output, its previews are dropped and the MP4 plays on the node.
import { app } from "../../../scripts/app.js";

const VIDEO_NODES = new Set(["SadTalkerRenderToVideo"]);

function dropPreviews(node) {
  const previews = app.nodePreviewImages;
  if (!previews) return;
  const id = String(node.id);
  for (const key of Object.keys(previews)) {
    // a node in the root graph is keyed by its id, one inside a subgraph by "<subgraph>:<id>"
    if (key === id || key.endsWith(`:${id}`)) delete previews[key];
  }
}

app.registerExtension({
  name: "SadTalker.VideoOverPreviews",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!VIDEO_NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      if (output?.images?.length) dropPreviews(this);
      return onExecuted?.apply(this, arguments);
    };
  },
});
