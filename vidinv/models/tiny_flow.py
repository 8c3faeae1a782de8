"""Tiny rectified-flow models (SD3 without T5, Flux, Wan 2.1) built offline from config with a fixed seed.

The component classes of the real pipelines (SD3Transformer2DModel / FluxTransformer2DModel,
a 16-channel AutoencoderKL with its shift and scale, CLIP text towers, FlowMatchEulerDiscreteScheduler
with the family's shift), at random weights and a few thousand parameters each, for exact properties
on a CPU. The tokenizers are `vidinv.models.tiny`'s byte-level CLIP tokenizer; Flux's T5 tower is a
tiny T5EncoderModel reading that tokenizer's ids (so no sentencepiece model has to be shipped).
Wan 2.1 (a native video model) is its WanTransformer3DModel, a 3D causal AutoencoderKLWan (4x in
time, 8x in space) and a tiny UMT5 encoder reading the same tokenizer's ids. Their configs are data
in `vidinv.models.tiny_configs` (read without building a model).
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

from vidinv.models.tiny import build_tiny_tokenizer, tiny_text_config
from vidinv.models.tiny_configs import (  # the configs, as data (re-exported here)
    FLUX_SCHEDULER_CONFIG,
    SD3_SCHEDULER_CONFIG,
    T5_TOKENS,  # noqa: F401 (read from here by vidinv.planning)
    TEXT_DIM,
    TINY_FLOW_VAE_CONFIG,
    TINY_FLUX_CONFIG,
    TINY_FLUX_VAE_CONFIG,
    TINY_SD3_CONFIG,
    TINY_SEED,
    TINY_T5_CONFIG,
    TINY_WAN_CONFIG,
    TINY_WAN_VAE_CONFIG,
    WAN_SCHEDULER_CONFIG,
)


def _clip_with_projection() -> CLIPTextModelWithProjection:
    config = tiny_text_config()
    config.projection_dim = TEXT_DIM
    return CLIPTextModelWithProjection(config)


def _tiny_t5(width: int = TEXT_DIM) -> T5EncoderModel:
    return T5EncoderModel(T5Config(**TINY_T5_CONFIG | {"d_model": width}))


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
            vae=AutoencoderKL(**TINY_FLUX_VAE_CONFIG),
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
            text_encoder=UMT5EncoderModel(UMT5Config(**TINY_T5_CONFIG)),
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

    from vidinv.models.tiny_configs import TINY_PIPELINES

    return getattr(diffusers, TINY_PIPELINES[name])(**TINY_FLOW_BUILDERS[name]())
