"""Editing: sample with the target prompt from an inversion record, structure kept by injection."""

from vidinv.editing.pnp import EditResult, pnp_edit

__all__ = ["EditResult", "pnp_edit"]
