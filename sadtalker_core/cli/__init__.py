"""sadtalker_core.cli."""
