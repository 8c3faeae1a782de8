"""Steps every job shares: load the models and the clip the config names."""

from __future__ import annotations

import torch

from vidinv.config import Config


def load_models_for(config: Config):
    """The configured model: cross-frame attention on its UNet, VAE tiling and CPU offload as configured."""
    from vidinv.attention.inflate import install_from_config
    from vidinv.models import load_models
    from vidinv.models.offload import apply_offload
    from vidinv.models.vae import set_vae_tiling

    m, rt = config.model, config.runtime
    models = load_models(m.pretrained, dtype=m.dtype, device=m.device, single_file_config=m.single_file_config)
    install_from_config(models.unet, m)
    set_vae_tiling(models.vae, rt.vae_tile_size if rt.vae_tiling else None)
    apply_offload(models, rt.offload)
    return models


def load_clip(config: Config):
    """The clip as configured: an object with .frames (f, 3, H, W) in [-1, 1] and .fps."""
    from vidinv.io import read_video

    v = config.video
    size = None if v.height is None and v.width is None else (v.height, v.width)
    return read_video(v.path, start=v.start, num_frames=v.num_frames, stride=v.stride, size=size, resize=v.resize)


def generator_for(seed: int) -> torch.Generator:
    """A CPU generator: the same seed gives the same numbers on every device."""
    return torch.Generator("cpu").manual_seed(seed)
