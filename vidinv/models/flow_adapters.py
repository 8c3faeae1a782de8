"""How vidinv talks to a flow family's transformer: one `FlowAdapter` per calling convention (SD3's,
Flux's, Wan's, LTX-Video's, HunyuanVideo's), named by the family's record (`vidinv.models.families`).

    cond = family.adapter.encode(pipe, ["", "a cat"], device=device, tokens=256, guidance=None)
    v = family.adapter.call(transformer, x, t, cond)        # x ((b f) c h w); video models: (b f c h w)
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
    ids (l 3) and the embedded guidance (b) of its guidance-distilled transformer (None without);
    LTX-Video: the text tokens' attention mask (b l), True on the prompt's tokens (None: all attended)."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None
    text_ids: torch.Tensor | None = None
    guidance: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return self.embeds.shape[0]

    def __len__(self) -> int:
        return self.rows

    def to(self, device) -> FlowCondition:
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return FlowCondition(
            move(self.embeds), move(self.pooled), move(self.text_ids), move(self.guidance), move(self.mask)
        )

    def per_frame(self, frames: int) -> FlowCondition:
        """The rows repeated for `frames` frames each: (b l d) -> ((b f) l d)."""
        return FlowCondition(
            repeat(self.embeds, "b l d -> (b f) l d", f=frames),
            None if self.pooled is None else repeat(self.pooled, "b d -> (b f) d", f=frames),
            self.text_ids,
            None if self.guidance is None else repeat(self.guidance, "b -> (b f)", f=frames),
            None if self.mask is None else repeat(self.mask, "b l -> (b f) l", f=frames),
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
            None if first.mask is None else torch.cat([c.mask for c in conditions]),
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
    calls it (the transformer reads the clip as (b c f h w)); t per token (b, tokens) for Wan 2.2 TI2V
    (`vidinv.models.flow.token_timesteps`)."""
    timestep = torch.as_tensor(t, dtype=torch.float32, device=x.device)
    timestep = timestep if timestep.dim() == 2 else timestep.expand(x.shape[0])
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


# --- LTX-Video: the whole latent clip as one token sequence, T5 text with its attention mask -----

# LTXPipeline's rope_interpolation_scale: its VAE's temporal factor over its default frame_rate 25, and
# its spatial factor (8 and 32 in every LTX-Video VAE, the tiny one's too)
LTX_ROPE_SCALE = (8 / 25, 32, 32)


def call_ltx(transformer, x: torch.Tensor, t, cond: FlowCondition) -> torch.Tensor:
    """LTX-Video's velocity for a whole latent clip x (b f c h w) at timestep t (0..1000), as LTXPipeline
    calls it: the clip packed into one token sequence (`_pack_latents`: patch_size_t x patch_size^2
    latent pixels a token), the prompt's attention mask, the clip's latent size and the rope's scale."""
    b, f, _, h, w = x.shape
    p, pt = transformer.config.patch_size, transformer.config.patch_size_t
    tokens = rearrange(x, "b (f pt) c (h p) (w q) -> b (f h w) (c pt p q)", pt=pt, p=p, q=p)
    timestep = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(b)
    out = transformer(
        hidden_states=tokens,
        encoder_hidden_states=cond.embeds,
        timestep=timestep,
        encoder_attention_mask=cond.mask,
        num_frames=f // pt,
        height=h // p,
        width=w // p,
        rope_interpolation_scale=LTX_ROPE_SCALE,
        return_dict=False,
    )[0]
    return rearrange(
        out, "b (f h w) (c pt p q) -> b (f pt) c (h p) (w q)", f=f // pt, h=h // p, w=w // p, pt=pt, p=p, q=p
    )


def encode_ltx(pipe, prompts: list[str], *, device, tokens: int, guidance=None) -> FlowCondition:
    embeds, mask, _, _ = pipe.encode_prompt(
        prompt=list(prompts), do_classifier_free_guidance=False, max_sequence_length=tokens, device=device
    )
    return FlowCondition(embeds, None, mask=mask)


def empty_ltx(rows: int, tokens: int, config, dtype: torch.dtype) -> FlowCondition:
    mask = torch.ones(rows, tokens, dtype=torch.bool)
    return FlowCondition(torch.empty(rows, tokens, config.caption_channels, dtype=dtype), None, mask=mask)


# --- HunyuanVideo: a 3D dual/single-stream transformer, LLaMA text with its mask, CLIP pooled, guidance x 1000


LLAMA3_HEADER = "<|start_header_id|>"  # the pipeline's prompt template is written in LLaMA-3's chat tokens


def hunyuan_template(tokenizer) -> dict:
    """The prompt template of `tokenizer`: HunyuanVideoPipeline's own (LLaMA-3 chat tokens, crop_start
    95) when it knows their header token; else the tiny models' short one (their byte-level tokenizer)."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    from vidinv.models.tiny_configs import TINY_HUNYUAN_TEMPLATE

    return DEFAULT_PROMPT_TEMPLATE if LLAMA3_HEADER in tokenizer.get_vocab() else TINY_HUNYUAN_TEMPLATE


def call_hunyuan(transformer, x: torch.Tensor, t, cond: FlowCondition) -> torch.Tensor:
    """HunyuanVideo's velocity for a whole latent clip x (b f c h w) at timestep t (0..1000), as
    HunyuanVideoPipeline calls it: the clip as (b c f h w), the timestep in fp32, the prompt's attention
    mask and pooled CLIP embedding in the transformer's dtype, the embedded guidance x 1000."""
    dtype = transformer.dtype
    timestep = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(x.shape[0])
    guidance = None if cond.guidance is None else cond.guidance.to(device=x.device, dtype=dtype) * 1000.0
    out = transformer(
        hidden_states=rearrange(x, "b f c h w -> b c f h w"),
        timestep=timestep,
        encoder_hidden_states=cond.embeds,
        encoder_attention_mask=cond.mask.to(device=x.device, dtype=dtype),
        pooled_projections=cond.pooled,
        guidance=guidance,
        return_dict=False,
    )[0]
    return rearrange(out, "b c f h w -> b f c h w")


def encode_hunyuan(pipe, prompts: list[str], *, device, tokens: int, guidance: float | None = None) -> FlowCondition:
    embeds, pooled, mask = pipe.encode_prompt(
        prompt=list(prompts),
        prompt_template=hunyuan_template(pipe.tokenizer),
        device=device,
        max_sequence_length=tokens,
    )
    rows = torch.full((len(prompts),), 1.0 if guidance is None else float(guidance))
    return FlowCondition(embeds, pooled, guidance=rows, mask=mask)


def empty_hunyuan(rows: int, tokens: int, config, dtype: torch.dtype) -> FlowCondition:
    embeds = torch.empty(rows, tokens, config.text_embed_dim, dtype=dtype)
    pooled = torch.empty(rows, config.pooled_projection_dim, dtype=dtype)
    return FlowCondition(embeds, pooled, guidance=torch.ones(rows), mask=torch.ones(rows, tokens, dtype=dtype))


SD3_ADAPTER = FlowAdapter(call_sd3, encode_sd3, empty_sd3)
FLUX_ADAPTER = FlowAdapter(call_flux, encode_flux, empty_flux)
WAN_ADAPTER = FlowAdapter(call_wan, encode_wan, empty_wan)
LTX_ADAPTER = FlowAdapter(call_ltx, encode_ltx, empty_ltx)
HUNYUAN_ADAPTER = FlowAdapter(call_hunyuan, encode_hunyuan, empty_hunyuan)
