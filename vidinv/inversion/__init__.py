"""Inversion engine: DDIM, FreeInv, MBDI and edit-friendly DDPM inversion of whole clips."""

from vidinv.inversion.api import invert, invert_or_load, reconstruct, source_eps
from vidinv.inversion.record import InversionRecord

__all__ = ["InversionRecord", "invert", "invert_or_load", "reconstruct", "source_eps"]
