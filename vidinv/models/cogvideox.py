"""How vidinv calls CogVideoX's transformer (`CogVideoXTransformer3DModel`): its `FlowAdapter`.

    v = COGVIDEOX_ADAPTER.call(transformer, x, t, cond)     # x (b f c h w), the whole latent clip

CogVideoX is a native video DiT trained as a DDPM: it predicts v (Salimans & Ho 2022) at an integer
timestep of a DDIM grid (`CogVideoXDDIMScheduler`: scaled-linear betas, the SNR shifted by
`snr_shift_scale`, rescaled to zero terminal SNR), so vidinv's DDPM-grid samplers (ddim, freeinv,
mbdi, ddpm_ef) step it, not the flow samplers. The call is CogVideoXPipeline's: latents in its
(b f c h w) layout, the T5 sequence as `encoder_hidden_states`, and, when the transformer's config
uses them (CogVideoX-5b), the rotary embeddings of the clip's token grid made by the pipeline's own
`_prepare_rotary_positional_embeddings`. Prompts are encoded by the pipeline's `encode_prompt`
(one row a prompt, as Wan's).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from vidinv.models.flow_adapters import FlowAdapter, FlowCondition, encode_wan


def rotary_embeddings(transformer, frames: int, height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of the token grid of `frames` latent frames of `height` x `width` latent pixels:
    CogVideoXPipeline's own method, its spatial factor 1 (it reads pixels; these are latent pixels)."""
    from diffusers import CogVideoXPipeline

    latent_pixels = SimpleNamespace(transformer=transformer, vae_scale_factor_spatial=1)
    return CogVideoXPipeline._prepare_rotary_positional_embeddings(latent_pixels, height, width, frames, device)


def call_cogvideox(transformer, x: torch.Tensor, t, cond: FlowCondition) -> torch.Tensor:
    """CogVideoX's prediction (v) for a whole latent clip x (b f c h w) at DDPM timestep t (0..999),
    as CogVideoXPipeline calls it: the timestep as the scheduler gives it, broadcast over the rows."""
    b, f, _, h, w = x.shape
    timestep = torch.as_tensor(t, device=x.device).expand(b)
    rotary = None
    if transformer.config.use_rotary_positional_embeddings:
        rotary = rotary_embeddings(transformer, f, h, w, x.device)
    return transformer(
        hidden_states=x,
        encoder_hidden_states=cond.embeds,
        timestep=timestep,
        image_rotary_emb=rotary,
        return_dict=False,
    )[0]


def empty_cogvideox(rows: int, tokens: int, config, dtype: torch.dtype) -> FlowCondition:
    return FlowCondition(torch.empty(rows, tokens, config.text_embed_dim, dtype=dtype), None)


COGVIDEOX_ADAPTER = FlowAdapter(call_cogvideox, encode_wan, empty_cogvideox)
