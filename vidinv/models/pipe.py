"""`Models` on the components of a loaded diffusers Stable Diffusion pipeline: the same objects, no copy."""

from __future__ import annotations

import torch

from vidinv.errors import VidinvError
from vidinv.models.family import family_of_components
from vidinv.models.loading import COMPONENTS, DTYPES, MODULES, Models

SDXL_ONLY = ("tokenizer_2", "text_encoder_2")


def dtype_name(dtype: torch.dtype) -> str:
    """The config's name of a torch dtype (`model.dtype`): fp32, fp16, bf16."""
    names = {value: key for key, value in DTYPES.items()}
    if dtype not in names:
        raise VidinvError(f"model dtype {dtype} is not one of {', '.join(DTYPES)}")
    return names[dtype]


def models_from_pipe(pipe) -> Models:
    """The pipeline's tokenizer(s), text encoder(s), UNet, VAE and scheduler (the objects themselves,
    put in eval mode without gradients), on the UNet's device and in its dtype; SDXL's second
    tokenizer and text encoder when the pipeline has them."""
    required = [name for name in COMPONENTS if name not in SDXL_ONLY]
    missing = [name for name in required if getattr(pipe, name, None) is None]
    if missing:
        raise VidinvError(
            f"from_pipe: {type(pipe).__name__} has no {', '.join(missing)} "
            f"(a Stable Diffusion pipeline has {', '.join(required)})"
        )
    parts = {name: getattr(pipe, name, None) for name in COMPONENTS}
    for name in MODULES:
        if parts[name] is not None:
            parts[name].eval().requires_grad_(False)
    param = next(pipe.unet.parameters())
    source = getattr(pipe, "name_or_path", None) or type(pipe).__name__
    family = family_of_components(parts, dict(getattr(pipe, "config", {}) or {}))
    return Models(**parts, device=param.device, dtype=param.dtype, source=str(source), family=family)
