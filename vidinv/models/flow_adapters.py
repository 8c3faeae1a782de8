"""How vidinv talks to a flow family's transformer: one `FlowAdapter` per calling convention (SD3's,
Flux's, Wan's), named by the family's record (`vidinv.models.families`).

    cond = family.adapter.encode(pipe, ["", "a cat"], device=device, tokens=256, guidance=None)
    v = family.adapter.call(transformer, x, t, cond)        # x ((b f) c h w); Wan: (b f c h w)
    fake = family.adapter.empty(rows, tokens, transformer.config, dtype)   # the planner's shapes

`call` is the transformer call as the family's diffusers pipeline makes it, `encode` the pipeline's
own `encode_prompt` (one row a prompt), `empty` uninitialised conditions of the shapes `encode`
gives (`vidinv plan` runs the transformer on fake tensors).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange, repeat


@dataclass
class FlowCondition:
    """The text conditions of b prompt rows: embeds (b l d), pooled (b d) (None for Wan); Flux: text
    ids (l 3) and the embedded guidance (b) of its guidance-distilled transformer (None without)."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None
    text_ids: torch.Tensor | None = None
    guidance: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return self.embeds.shape[0]

    def __len__(self) -> int:
        return self.rows

    def to(self, device) -> FlowCondition:
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return FlowCondition(move(self.embeds), move(self.pooled), move(self.text_ids), move(self.guidance))

    def per_frame(self, frames: int) -> FlowCondition:
        """The rows repeated for `frames` frames each: (b l d) -> ((b f) l d)."""
        return FlowCondition(
            repeat(self.embeds, "b l d -> (b f) l d", f=frames),
            None if self.pooled is None else repeat(self.pooled, "b d -> (b f) d", f=frames),
            self.text_ids,
            None if self.guidance is None else repeat(self.guidance, "b -> (b f)", f=frames),
        )

    @staticmethod
    def cat(conditions: list[FlowCondition]) -> FlowCondition:
        """The rows of several conditions of one model, in order."""
        first = conditions[0]
        guidance = None if first.guidance is None else torch.cat([c.guidance for c in conditions])
        return FlowCondition(
            torch.cat([c.embeds for c in conditions]),
            None if first.pooled is None else torch.cat([c.pooled for c in conditions]),
            first.text_ids,
            guidance,
        )


@dataclass(frozen=True)
class FlowAdapter:
    """A transformer's calling convention (module docstring)."""

    call: Callable  # (transformer, x, t, cond) -> velocity, x's layout
    encode: Callable  # (pipeline, prompts, *, device, tokens, guidance) -> FlowCondition (the pipeline's dtype)
    empty: Callable  # (rows, tokens, transformer config, dtype) -> FlowCondition of uninitialised tensors


# --- SD3: MMDiT, CLIP-L + CLIP-G (+ T5) text, classifier-free guidance over rows ----------------


def call_sd3(transformer, x: torch.Tensor, t, cond: FlowCondition) -> torch.Tensor:
    """SD3's velocity for latents x (B c h w) at timestep t (0..1000), as its pipeline calls it: the
    timestep in fp32 whatever the model's dtype (in fp16 the 50-step shift-3 grid was off by up to 0.23)."""
    timestep = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(x.shape[0])
    return transformer(
        hidden_states=x,
        timestep=timestep,
        encoder_hidden_states=cond.embeds,
        pooled_projections=cond.pooled,
        return_dict=False,
    )[0]


def encode_sd3(pipe, prompts: list[str], *, device, tokens: int, guidance=None) -> FlowCondition:
    embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=list(prompts),
        prompt_2=None,
        prompt_3=None,
        device=device,
        do_classifier_free_guidance=False,
        max_sequence_length=tokens,
    )
    return FlowCondition(embeds, pooled)


def empty_sd3(rows: int, tokens: int, config, dtype: torch.dtype) -> FlowCondition:
    embeds = torch.empty(rows, tokens, config.joint_attention_dim, dtype=dtype)
    return FlowCondition(embeds, torch.empty(rows, config.pooled_projection_dim, dtype=dtype))


# --- Flux: 2x2-packed tokens with rotary ids, CLIP pooled + T5 text, guidance embedded ------------


def call_flux(transformer, x: torch.Tensor, t, cond: FlowCondition) -> torch.Tensor:
    """Flux's velocity for latents x (B c h w): 2x2-packed tokens, image ids, timestep / 1000 and
    the embedded guidance, as FluxPipeline calls it."""
    from diffusers import FluxPipeline

    b, _, h, w = x.shape
    tokens = rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", p=2, q=2)
    image_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x.device, x.dtype)
    timestep = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(b) / 1000
    guidance = None
    if transformer.config.guidance_embeds:
        guidance = cond.guidance.to(device=x.device, dtype=torch.float32)
    out = transformer(
        hidden_states=tokens,
        timestep=timestep,
        guidance=guidance,
        pooled_projections=cond.pooled,
        encoder_hidden_states=cond.embeds,
        txt_ids=cond.text_ids,
        img_ids=image_ids,
        return_dict=False,
    )[0]
    return rearrange(out, "b (h w) (c p q) -> b c (h p) (w q)", h=h // 2, p=2, q=2)


def encode_flux(pipe, prompts: list[str], *, device, tokens: int, guidance: float | None = None) -> FlowCondition:
    embeds, pooled, text_ids = pipe.encode_prompt(
        prompt=list(prompts), prompt_2=None, device=device, max_sequence_length=tokens
    )
    rows = torch.full((len(prompts),), 1.0 if guidance is None else float(guidance))
    return FlowCondition(embeds, pooled, text_ids, rows)


def empty_flux(rows: int, tokens: int, config, dtype: torch.dtype) -> FlowCondition:
    embeds = torch.empty(rows, tokens, config.joint_attention_dim, dtype=dtype)
    pooled = torch.empty(rows, config.pooled_projection_dim, dtype=dtype)
    return FlowCondition(embeds, pooled, torch.zeros(tokens, 3, dtype=dtype), torch.ones(rows))


# --- Wan 2.1: a 3D transformer over the whole latent clip, UMT5 text, no pooled embedding ----------


def call_wan(transformer, x: torch.Tensor, t, cond: FlowCondition) -> torch.Tensor:
    """Wan's velocity for a whole latent clip x (b f c h w) at timestep t (0..1000), as WanPipeline
    calls it (the transformer reads the clip as (b c f h w))."""
    timestep = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(x.shape[0])
    out = transformer(
        hidden_states=rearrange(x, "b f c h w -> b c f h w"),
        timestep=timestep,
        encoder_hidden_states=cond.embeds,
        return_dict=False,
    )[0]
    return rearrange(out, "b c f h w -> b f c h w")


def encode_wan(pipe, prompts: list[str], *, device, tokens: int, guidance=None) -> FlowCondition:
    embeds, _ = pipe.encode_prompt(
        prompt=list(prompts), do_classifier_free_guidance=False, max_sequence_length=tokens, device=device
    )
    return FlowCondition(embeds, None)


def empty_wan(rows: int, tokens: int, config, dtype: torch.dtype) -> FlowCondition:
    return FlowCondition(torch.empty(rows, tokens, config.text_dim, dtype=dtype), None)


SD3_ADAPTER = FlowAdapter(call_sd3, encode_sd3, empty_sd3)
FLUX_ADAPTER = FlowAdapter(call_flux, encode_flux, empty_flux)
WAN_ADAPTER = FlowAdapter(call_wan, encode_wan, empty_wan)
