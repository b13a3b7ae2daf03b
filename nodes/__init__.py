"""ComfyUI nodes of the pack: merges the mapping dicts of the node modules (relative imports only)."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
