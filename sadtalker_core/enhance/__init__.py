"""sadtalker_core.enhance."""
