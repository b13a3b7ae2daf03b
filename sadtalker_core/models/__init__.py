"""sadtalker_core.models."""
