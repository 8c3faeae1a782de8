"""`Models` on the components of a loaded diffusers Stable Diffusion pipeline: the same objects, no copy."""

from __future__ import annotations

import torch

from vidinv.errors import VidinvError
from vidinv.models.loading import COMPONENTS, DTYPES, MODULES, Models


def dtype_name(dtype: torch.dtype) -> str:
    """The config's name of a torch dtype (`model.dtype`): fp32, fp16, bf16."""
    names = {value: key for key, value in DTYPES.items()}
    if dtype not in names:
        raise VidinvError(f"model dtype {dtype} is not one of {', '.join(DTYPES)}")
    return names[dtype]


def models_from_pipe(pipe) -> Models:
    """The pipeline's tokenizer, text encoder, UNet, VAE and scheduler (the objects themselves, put
    in eval mode without gradients), on the UNet's device and in its dtype."""
    missing = [name for name in COMPONENTS if getattr(pipe, name, None) is None]
    if missing:
        raise VidinvError(
            f"from_pipe: {type(pipe).__name__} has no {', '.join(missing)} "
            f"(a Stable Diffusion pipeline has {', '.join(COMPONENTS)})"
        )
    for name in MODULES:
        getattr(pipe, name).eval().requires_grad_(False)
    param = next(pipe.unet.parameters())
    source = getattr(pipe, "name_or_path", None) or type(pipe).__name__
    parts = {name: getattr(pipe, name) for name in COMPONENTS}
    return Models(**parts, device=param.device, dtype=param.dtype, source=str(source))
