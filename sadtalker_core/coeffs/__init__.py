"""sadtalker_core.coeffs."""
