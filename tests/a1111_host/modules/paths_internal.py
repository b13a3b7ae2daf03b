"""``modules.paths_internal``: the webui's folders (``--data-dir`` -> env SADTALKER_WEBUI_DATA)."""

import os

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data_path = os.environ.get("SADTALKER_WEBUI_DATA", os.getcwd())
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
default_output_dir = os.path.join(data_path, "outputs")
