"""``modules.paths``: re-exports the folders; importing it installs the pickle checker, as A1111."""

import modules.safe  # noqa: F401
from modules.paths_internal import (  # noqa: F401
    data_path,
    extensions_builtin_dir,
    extensions_dir,
    models_path,
    script_path,
)
