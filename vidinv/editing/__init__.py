"""Editing: sample with the target prompt from an inversion record, structure kept by injection."""

from __future__ import annotations

import importlib

from vidinv.editing.pnp import EditResult, pnp_edit

# edit.method -> "module:function"; each function is (models, record, config, *, progress) -> EditResult
EDIT_METHODS = {
    "pnp": "vidinv.editing.pnp:pnp_edit",
    "tokenflow": "vidinv.editing.tokenflow:tokenflow_edit",
    "fatezero": "vidinv.editing.fatezero:fatezero_edit",
}


def edit_method(name: str):
    """The edit function registered for `edit.method`."""
    from vidinv.errors import VidinvError

    if name not in EDIT_METHODS:
        raise VidinvError(f"edit.method: {name!r} is not available yet (available: {', '.join(EDIT_METHODS)})")
    module, function = EDIT_METHODS[name].split(":")
    return getattr(importlib.import_module(module), function)


__all__ = ["EDIT_METHODS", "EditResult", "edit_method", "pnp_edit"]
