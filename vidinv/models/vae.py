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
