"""``modules.shared``: opts, state, the loaded diffusion model (none here)."""

from modules import options, shared_state
from modules.options import OptionInfo  # noqa: F401  (A1111 re-exports it here)
from modules.paths_internal import data_path, models_path  # noqa: F401

opts = options.Options({})
state = shared_state.State()
sd_model = None
demo = None
