"""Temporal inflation of the SD UNet: cross-frame attention processors and the chunked runner."""

from vidinv.attention.runner import run_unet

__all__ = ["run_unet"]
