"""Inversion engine: DDIM, FreeInv, MBDI and edit-friendly DDPM inversion of whole clips.

Methods are plug-ins (`InversionMethod`, registered by name); each record names its sampler
(the step rule), chosen once when regenerating or editing from it.
"""

from vidinv.inversion.api import ReconstructionStats, invert, invert_or_load, reconstruct, record_model
from vidinv.inversion.methods import InversionMethod, get_inversion_method, register_inversion_method
from vidinv.inversion.record import InversionRecord, InversionStats
from vidinv.inversion.samplers import Sampler, sampler_for

__all__ = [
    "InversionMethod",
    "InversionRecord",
    "InversionStats",
    "ReconstructionStats",
    "Sampler",
    "get_inversion_method",
    "invert",
    "invert_or_load",
    "reconstruct",
    "record_model",
    "register_inversion_method",
    "sampler_for",
]
