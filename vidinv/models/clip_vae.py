"""Video VAEs that diffusers runs over a whole clip only (LTX-Video's, HunyuanVideo's, CogVideoX's).

Unlike Wan's causal VAE (`vidinv.models.causal_vae`), whose feature cache can be carried from group
to group, these VAEs expose no streaming state: diffusers encodes and decodes a clip in one call,
bounding its memory by its own spatial and temporal tiling (`enable_tiling`: tiles blended where
they overlap; `runtime.vae_tiling` and `runtime.vae_tile_size` set them). vidinv makes that same call,
so its latents and frames are diffusers' whole-clip ones by construction; the pushed frames are held
until `finish`.

    encoder = ClipEncoder(vae)
    for chunk in chunks:
        encoder.push(chunk)                  # no latents yet: (0, c, h, w)
    latents = encoder.finish()               # (m, c, h, w), normalised as the family's pipeline does
    frames = ClipDecoder(vae).push(latents)  # (k, 3, H, W) in [-1, 1], float32 on the CPU

Normalisation, as the pipelines do it: LTX-Video z = (mean - latents_mean) * scaling_factor /
latents_std (its statistics are buffers of the VAE); HunyuanVideo and CogVideoX z = mean * scaling_factor.
"""

from __future__ import annotations

import torch
from einops import rearrange

from vidinv.models.causal_vae import check_frame_count, temporal_factor
from vidinv.models.offload import placement

CLIP_VAE_CLASSES = ("AutoencoderKLLTXVideo", "AutoencoderKLHunyuanVideo", "AutoencoderKLCogVideoX")


# latent frames after the first that a VAE decodes together: CogVideoX's pairs (an odd count of latent
# frames decodes to 1 + 4 (k - 1) frames, an even one to 4 k), so its clips are 1 + 8k frames
LATENT_FRAME_GROUPS = {"AutoencoderKLCogVideoX": 2}


def latent_frame_group(vae_class: str) -> int:
    """Latent frames after the first that a VAE of this class decodes together (1: any count)."""
    return LATENT_FRAME_GROUPS.get(vae_class, 1)


def is_clip_video_vae(vae) -> bool:
    """True for a video VAE diffusers encodes and decodes as a whole clip (module docstring)."""
    return type(vae).__name__ in CLIP_VAE_CLASSES


def _statistics(vae, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(latents_mean, latents_std) as (c, 1, 1) float32 tensors, or None for a VAE without them."""
    buffers = dict(vae.named_buffers(recurse=False))  # LTX-Video's; not config attributes (diffusers warns)
    mean, std = buffers.get("latents_mean"), buffers.get("latents_std")
    if mean is None or std is None:
        return None
    as_column = lambda x: torch.as_tensor(x, dtype=torch.float32, device=device)[:, None, None]  # noqa: E731
    return as_column(mean), as_column(std)


def normalise(vae, mean_z: torch.Tensor) -> torch.Tensor:
    """The posterior mean (m c h w) as the pipeline's latents (module docstring)."""
    scale = float(vae.config.get("scaling_factor", 1.0) or 1.0)
    stats = _statistics(vae, mean_z.device)
    if stats is None:
        return mean_z * scale
    latents_mean, latents_std = stats
    return (mean_z - latents_mean) * scale / latents_std


def denormalise(vae, latents: torch.Tensor) -> torch.Tensor:
    """`normalise`'s inverse: the decoder's input (m c h w) for the pipeline's latents."""
    scale = float(vae.config.get("scaling_factor", 1.0) or 1.0)
    stats = _statistics(vae, latents.device)
    if stats is None:
        return latents / scale
    latents_mean, latents_std = stats
    return latents * latents_std / scale + latents_mean


class ClipEncoder:
    """Frames (k, 3, H, W) in [-1, 1], pushed in chunks of any size and held on the CPU -> the whole
    clip's normalised latents (m, c, h, w) at `finish`, from diffusers' one `vae.encode` call."""

    def __init__(self, vae):
        self.vae = vae
        self.pending: list[torch.Tensor] = []

    def push(self, frames: torch.Tensor) -> torch.Tensor:
        """Holds the frames; no latents before the clip ends (an empty (0, c, h, w))."""
        self.pending.append(frames.detach().to("cpu", torch.float32))
        return torch.empty(0)

    @torch.no_grad()
    def finish(self) -> torch.Tensor | None:
        """The clip's latents (None when no frame was pushed)."""
        if not self.pending:
            return None
        vae = self.vae
        frames = sum(len(part) for part in self.pending)
        check_frame_count(frames, temporal_factor(vae.config) * latent_frame_group(type(vae).__name__), "the clip")
        device, dtype = placement(vae)
        clip = rearrange(torch.cat(self.pending), "t c h w -> 1 c t h w").to(device=device, dtype=dtype)
        self.pending = []
        mean_z = vae.encode(clip.contiguous()).latent_dist.mean.float()
        return normalise(vae, rearrange(mean_z, "1 c t h w -> t c h w"))


class ClipDecoder:
    """Normalised latents (m, c, h, w) -> frames (k, 3, H, W) in [-1, 1], float32 on the CPU, from
    diffusers' one `vae.decode` call over the latents pushed (`whole_clip`: push the whole clip)."""

    whole_clip = True

    def __init__(self, vae):
        self.vae = vae

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        device, dtype = placement(vae)
        z = denormalise(vae, latents.to(device=device, dtype=torch.float32))
        z = rearrange(z, "t c h w -> 1 c t h w").to(dtype)
        extra = {}
        if vae.config.get("timestep_conditioning", False):  # LTX-Video 0.9.1+: LTXPipeline's decode_timestep 0
            extra["temb"] = torch.zeros(1, device=device, dtype=dtype)
        frames = vae.decode(z, **extra).sample.clamp(-1, 1).float().cpu()
        return rearrange(frames, "1 c t h w -> t c h w")


__all__ = ["ClipDecoder", "ClipEncoder", "denormalise", "is_clip_video_vae", "latent_frame_group", "normalise"]
