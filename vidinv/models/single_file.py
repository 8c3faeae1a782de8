"""Single-file SD checkpoints (.safetensors / .ckpt in the original LDM layout)."""

from __future__ import annotations

from pathlib import Path

import torch

from vidinv.errors import VidinvError


def load_single_file(path: str, dtype: torch.dtype, config: str | None = None) -> dict:
    """Components of an SD 1.x/2.x single-file checkpoint, converted by diffusers."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    if not Path(path).is_file():
        raise VidinvError(f"model.pretrained: checkpoint file {path} does not exist")
    try:
        pipe = StableDiffusionPipeline.from_single_file(path, config=config, torch_dtype=dtype, safety_checker=None)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VidinvError(f"model.pretrained: cannot load checkpoint {path}: {first_line}") from err
    return dict(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        unet=pipe.unet,
        vae=pipe.vae,
        scheduler=DDIMScheduler.from_config(pipe.scheduler.config),
    )
