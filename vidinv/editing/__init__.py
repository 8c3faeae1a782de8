"""Editing: sample with the target prompt from an inversion record, structure kept by injection.

Edit methods are plug-ins (`EditMethod`, registered by name in `vidinv.registry.EDIT_METHODS`).
"""

from vidinv.editing.methods import Capture, EditMethod, EditResult, EditStats, get_edit_method, register_edit_method
from vidinv.editing.pnp import PnPEdit, pnp_edit

__all__ = [
    "Capture",
    "EditMethod",
    "EditResult",
    "EditStats",
    "PnPEdit",
    "get_edit_method",
    "pnp_edit",
    "register_edit_method",
]
