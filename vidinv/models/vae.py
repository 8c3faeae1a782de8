"""Chunked VAE encode/decode: `vae_chunk` frames per call, so memory is set by the chunk."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from vidinv.chunks import frame_slices


@torch.no_grad()
def encode_frames(vae, frames: torch.Tensor, chunk: int | None = None, *, progress: bool = False) -> torch.Tensor:
    """frames (f, 3, H, W) in [-1, 1] -> latents (f, 4, H/8, W/8), scaled by the VAE's factor.

    Uses the posterior mean (deterministic), so chunked and unchunked encodes agree.
    """
    param = next(vae.parameters())
    parts = []
    for part in tqdm(frame_slices(len(frames), chunk), desc="vae encode", disable=not progress, leave=False):
        x = frames[part].to(device=param.device, dtype=param.dtype)
        parts.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(parts)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, chunk: int | None = None, *, progress: bool = False) -> torch.Tensor:
    """latents (f, 4, h, w) -> frames (f, 3, 8h, 8w) in [-1, 1] (clamped), float32 on the CPU."""
    param = next(vae.parameters())
    parts = []
    for part in tqdm(frame_slices(len(latents), chunk), desc="vae decode", disable=not progress, leave=False):
        z = latents[part].to(device=param.device, dtype=param.dtype) / vae.config.scaling_factor
        parts.append(vae.decode(z).sample.clamp(-1, 1).float().cpu())
    return torch.cat(parts)


def load_vae(source: str, dtype: torch.dtype):
    """`model.vae`: an AutoencoderKL replacing the pipeline's (a hub id or folder, e.g. an fp16-safe
    VAE such as madebyollin/sdxl-vae-fp16-fix); a pipeline folder's vae/ subfolder is used."""
    from pathlib import Path

    from diffusers import AutoencoderKL

    from vidinv.errors import VidinvError, first_line

    subfolder = "vae" if (Path(source) / "vae" / "config.json").is_file() else None
    try:
        return AutoencoderKL.from_pretrained(source, subfolder=subfolder, torch_dtype=dtype)
    except (OSError, ValueError) as err:
        raise VidinvError(f"model.vae: cannot load VAE {source!r}: {first_line(err)}") from err
