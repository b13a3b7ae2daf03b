"""sadtalker_core.io."""
