"""Coefficient stage: speech (or idle time) + the source face -> per-frame motion coefficients;
the entry point is :func:`generate_coeffs` with the networks of :class:`CoeffModels`."""

from __future__ import annotations

from .generate import CoeffModels, generate_coeffs

__all__ = ["CoeffModels", "generate_coeffs"]
