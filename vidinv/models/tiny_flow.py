"""Tiny rectified-flow models (SD3 without T5, Flux, Wan 2.1) built offline from config with a fixed seed.

The component classes of the real pipelines (SD3Transformer2DModel / FluxTransformer2DModel,
a 16-channel AutoencoderKL with its shift and scale, CLIP text towers, FlowMatchEulerDiscreteScheduler
with the family's shift), at random weights and a few thousand parameters each, for exact properties
on a CPU. The tokenizers are `vidinv.models.tiny`'s byte-level CLIP tokenizer; Flux's T5 tower is a
tiny T5EncoderModel reading that tokenizer's ids (so no sentencepiece model has to be shipped).
Wan 2.1 (a native video model) is its WanTransformer3DModel, a 3D causal AutoencoderKLWan (4x in
time, 8x in space) and a tiny UMT5 encoder reading the same tokenizer's ids.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    WanTransformer3DModel,
)
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

from vidinv.models.tiny import TEXT_DIM, TINY_SEED, TINY_VAE_CONFIG, build_tiny_tokenizer, tiny_text_config, tiny_vocab

LATENT_CHANNELS = 16
T5_TOKENS = 32  # the tiny models' T5 sequence length (SD3: 256, Flux-dev: 512)

TINY_FLOW_VAE_CONFIG = {
    **TINY_VAE_CONFIG,
    "latent_channels": LATENT_CHANNELS,
    "scaling_factor": 1.5305,  # SD3's VAE
    "shift_factor": 0.0609,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}

TINY_SD3_CONFIG = dict(
    sample_size=8,
    patch_size=2,
    in_channels=LATENT_CHANNELS,
    num_layers=2,
    attention_head_dim=8,
    num_attention_heads=2,
    joint_attention_dim=2 * TEXT_DIM,  # the T5 width: the two CLIP towers' concatenation is padded to it
    caption_projection_dim=16,
    pooled_projection_dim=2 * TEXT_DIM,
    out_channels=LATENT_CHANNELS,
    pos_embed_max_size=16,
)

TINY_FLUX_CONFIG = dict(
    patch_size=1,
    in_channels=4 * LATENT_CHANNELS,  # 2x2 packed latents
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=TEXT_DIM,
    pooled_projection_dim=TEXT_DIM,
    guidance_embeds=True,
    axes_dims_rope=(4, 6, 6),
)

SD3_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=3.0)
FLUX_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)


TINY_WAN_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,  # rotary split 4 (time) + 4 (height) + 4 (width), as Wan's 128 = 44 + 42 + 42
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    text_dim=TEXT_DIM,
    freq_dim=16,
    ffn_dim=32,
    num_layers=2,
    rope_max_seq_len=64,
)
# Wan 2.1's VAE shape scaled down: 3 spatial (8x) and 2 temporal (4x) downsamplings; its latent statistics
TINY_WAN_VAE_CONFIG = dict(base_dim=8, z_dim=LATENT_CHANNELS, dim_mult=[1, 2, 2, 2], num_res_blocks=1)
WAN_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=3.0)  # Wan 2.1's flow_shift at 480p


def _clip_with_projection() -> CLIPTextModelWithProjection:
    config = tiny_text_config()
    config.projection_dim = TEXT_DIM
    return CLIPTextModelWithProjection(config)


def _tiny_t5(width: int = TEXT_DIM) -> T5EncoderModel:
    return T5EncoderModel(
        T5Config(vocab_size=len(tiny_vocab()), d_model=width, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    )


def _seeded(build):
    """build() under the fixed seed, leaving the global RNG as it was."""
    saved = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_SEED)
        return build()
    finally:
        torch.random.set_rng_state(saved)


def build_tiny_sd3_components(t5: bool = False) -> dict:
    """SD3's pipeline components, without T5 (text_encoder_3 = tokenizer_3 = None) unless `t5`
    (a tiny T5 as wide as the transformer's joint attention, as SD3's is)."""
    modules = _seeded(
        lambda: dict(
            transformer=SD3Transformer2DModel(**TINY_SD3_CONFIG),
            vae=AutoencoderKL(**TINY_FLOW_VAE_CONFIG),
            text_encoder=_clip_with_projection(),
            text_encoder_2=_clip_with_projection(),
            text_encoder_3=_tiny_t5(TINY_SD3_CONFIG["joint_attention_dim"]) if t5 else None,
        )
    )
    return dict(
        **{name: module if module is None else module.eval() for name, module in modules.items()},
        tokenizer=build_tiny_tokenizer(),
        tokenizer_2=build_tiny_tokenizer(),
        tokenizer_3=build_tiny_tokenizer() if t5 else None,
        scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER_CONFIG),
    )


def build_tiny_flux_components() -> dict:
    """Flux's pipeline components: CLIP for the pooled embedding, a tiny T5 for the sequence."""
    modules = _seeded(
        lambda: dict(
            transformer=FluxTransformer2DModel(**TINY_FLUX_CONFIG),
            vae=AutoencoderKL(**{**TINY_FLOW_VAE_CONFIG, "scaling_factor": 0.3611, "shift_factor": 0.1159}),
            text_encoder=CLIPTextModel(tiny_text_config()),
            text_encoder_2=_tiny_t5(),
        )
    )
    return dict(
        **{name: module.eval() for name, module in modules.items()},
        tokenizer=build_tiny_tokenizer(),
        tokenizer_2=build_tiny_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG),
    )


def build_tiny_wan_components() -> dict:
    """Wan 2.1's pipeline components: the 3D transformer, the causal video VAE, a tiny UMT5."""
    modules = _seeded(
        lambda: dict(
            transformer=WanTransformer3DModel(**TINY_WAN_CONFIG),
            vae=AutoencoderKLWan(**TINY_WAN_VAE_CONFIG),
            text_encoder=UMT5EncoderModel(
                UMT5Config(vocab_size=len(tiny_vocab()), d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
            ),
        )
    )
    return dict(
        **{name: module.eval() for name, module in modules.items()},
        tokenizer=build_tiny_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**WAN_SCHEDULER_CONFIG),
    )


TINY_FLOW_BUILDERS = {
    "tiny-sd3": build_tiny_sd3_components,
    "tiny-flux": build_tiny_flux_components,
    "tiny-wan": build_tiny_wan_components,
}


def tiny_flow_pipeline(name: str):
    """The diffusers pipeline of a tiny flow model (`tiny-sd3` | `tiny-flux` | `tiny-wan`):
    `save_pretrained` writes a folder that `vidinv.models.load_models` (and diffusers) read back."""
    import diffusers

    cls = {"tiny-sd3": "StableDiffusion3Pipeline", "tiny-flux": "FluxPipeline", "tiny-wan": "WanPipeline"}[name]
    return getattr(diffusers, cls)(**TINY_FLOW_BUILDERS[name]())
