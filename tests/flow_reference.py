"""The flow families' velocity written from each diffusers pipeline's own calls on the bare transformer:
the independent reference of the parity tests (tests/test_flow_inversion_models.py,
tests/test_second_order_flow.py)."""

from __future__ import annotations

import torch


def bare_velocity(models, x0: torch.Tensor, prompt: str, guidance: float):
    """(velocity(z, t), z0, back): the velocity at t in 0..1000 from the bare transformer as each
    pipeline calls it (SD3: CFG over uncond/cond rows; Flux: packed tokens, embedded guidance; Wan:
    cond and uncond passes over the (1 c f h w) video, the cond pass alone at guidance 1 as vidinv runs it),
    x0 (f c h w) in that layout, and the way back."""
    from diffusers import FluxPipeline

    pipe, transformer, tokens = models.pipeline, models.transformer, models.max_sequence_length
    f, c, h, w = x0.shape
    if models.family.name == "flux":
        embeds, pooled, text_ids = pipe.encode_prompt(prompt, None, max_sequence_length=tokens)
        image_ids = FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, x0.device, x0.dtype)

        def velocity(z, t):
            return transformer(
                hidden_states=z,
                timestep=torch.as_tensor(t).expand(1) / 1000,
                guidance=torch.full((1,), guidance),
                pooled_projections=pooled,
                encoder_hidden_states=embeds,
                txt_ids=text_ids,
                img_ids=image_ids,
            ).sample

        scale = pipe.vae_scale_factor
        return (
            velocity,
            FluxPipeline._pack_latents(x0, 1, c, h, w),
            lambda z: FluxPipeline._unpack_latents(z, h * scale, w * scale, scale),
        )
    if models.family.name == "wan":
        embeds, negative = pipe.encode_prompt(prompt, "", max_sequence_length=tokens)

        def velocity(z, t):
            t = torch.as_tensor(t).expand(1)
            cond = transformer(hidden_states=z, timestep=t, encoder_hidden_states=embeds).sample
            if guidance == 1:
                return cond
            uncond = transformer(hidden_states=z, timestep=t, encoder_hidden_states=negative).sample
            return uncond + guidance * (cond - uncond)

        return velocity, x0.permute(1, 0, 2, 3)[None], lambda z: z[0].permute(1, 0, 2, 3)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt, None, None, do_classifier_free_guidance=True, max_sequence_length=tokens
    )

    def velocity(z, t):
        v = transformer(
            hidden_states=torch.cat([z, z]),
            timestep=torch.as_tensor(t).expand(2 * len(z)),
            encoder_hidden_states=torch.cat([negative.expand(len(z), -1, -1), embeds.expand(len(z), -1, -1)]),
            pooled_projections=torch.cat([negative_pooled.expand(len(z), -1), pooled.expand(len(z), -1)]),
        ).sample
        return v[: len(z)] + guidance * (v[len(z) :] - v[: len(z)])

    return velocity, x0, lambda z: z
