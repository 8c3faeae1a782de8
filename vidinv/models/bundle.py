"""The loaded model as generic code sees it, whichever family: a `ModelBundle`.

    models = load_models("tiny-sd3")            # a PipelineModels; load_models("tiny") gives a Models
    isinstance(models, ModelBundle)             # True for both
    models.denoiser, models.family.guidance_embedded

`vidinv.models.Models` (UNet families: `denoiser` is its `unet`) and `vidinv.models.flow.PipelineModels`
(flow transformers: `denoiser` is its `transformer`) both are one. `family` is the family's record
(`vidinv.models.families.Family`; a UNet model's is a `ModelFamily`, the record with the checkpoint's
prediction type and size). Code that runs on UNets only may read `Models.unet`; generic code reads
the attributes below and asks the family's traits what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from vidinv.models.families import Family


@runtime_checkable
class ModelBundle(Protocol):
    """What every loaded model offers (module docstring)."""

    family: Family  # the family's record: its traits
    device: torch.device  # the execution device (inputs go there, whatever the offload)
    dtype: torch.dtype  # the model's dtype (a component may keep fp32: an upcast VAE)
    source: str  # what it was loaded from (model.pretrained)
    offload: str  # runtime.offload applied: none | model | sequential
    vae: torch.nn.Module
    scheduler: object
    tokenizer: object
    text_encoder: torch.nn.Module | None

    @property
    def denoiser(self) -> torch.nn.Module:
        """The network called at every step: the UNet or the flow transformer."""

    @property
    def video(self) -> bool:
        """Whether the denoiser sees the whole latent clip at once (a native video model: Wan)."""

    def save_pretrained(self, folder: str | Path) -> None:
        """Write a diffusers folder that `load_models` reads back."""
