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
    TINY_PIPELINE_SETTINGS,
    TINY_SD3_CONFIG,
    TINY_SEED,
    TINY_T5_CONFIG,
    TINY_WAN_CONFIG,
    TINY_WAN_VAE_CONFIG,
    WAN_SCHEDULER_CONFIG,
    tiny_model_configs,
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


def build_tiny_wan22_components() -> dict:
    """Wan 2.2 TI2V-5B's pipeline components: the 3D transformer on 48 channels, the patchified
    48-channel VAE, a tiny UMT5; WanPipeline's per-token timesteps (`expand_timesteps`)."""
    configs = tiny_model_configs("tiny-wan22")
    modules = _seeded(
        lambda: dict(
            transformer=WanTransformer3DModel(**configs["transformer"][1]),
            vae=AutoencoderKLWan(**configs["vae"][1]),
            text_encoder=UMT5EncoderModel(UMT5Config(**TINY_T5_CONFIG)),
        )
    )
    return dict(
        **{name: module.eval() for name, module in modules.items()},
        tokenizer=build_tiny_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**configs["scheduler"][1]),
        **TINY_PIPELINE_SETTINGS["tiny-wan22"],
    )


def build_tiny_wan22_a14b_components() -> dict:
    """Wan 2.2 A14B's pipeline components: two experts (the high-noise `transformer`, the low-noise
    `transformer_2` below WanPipeline's boundary_ratio), Wan 2.1's VAE, a tiny UMT5."""
    configs = tiny_model_configs("tiny-wan22-a14b")
    modules = _seeded(
        lambda: dict(
            transformer=WanTransformer3DModel(**configs["transformer"][1]),
            transformer_2=WanTransformer3DModel(**configs["transformer_2"][1]),
            vae=AutoencoderKLWan(**configs["vae"][1]),
            text_encoder=UMT5EncoderModel(UMT5Config(**TINY_T5_CONFIG)),
        )
    )
    return dict(
        **{name: module.eval() for name, module in modules.items()},
        tokenizer=build_tiny_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**configs["scheduler"][1]),
        **TINY_PIPELINE_SETTINGS["tiny-wan22-a14b"],
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


def build_tiny_cogvideox_components() -> dict:
    """CogVideoX's pipeline components: the 3D DiT, the causal video VAE, a tiny T5 reading the tiny
    tokenizer's ids, and CogVideoXDDIMScheduler with CogVideoX-2b's published config (a DDPM model,
    held as its pipeline like the DiTs above)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    from vidinv.models.tiny_configs import (
        COGVIDEOX_SCHEDULER_CONFIG,
        TINY_COGVIDEOX_CONFIG,
        TINY_COGVIDEOX_VAE_CONFIG,
    )

    modules = _seeded(
        lambda: dict(
            transformer=CogVideoXTransformer3DModel(**TINY_COGVIDEOX_CONFIG),
            vae=AutoencoderKLCogVideoX(**TINY_COGVIDEOX_VAE_CONFIG),
            text_encoder=_tiny_t5(),
        )
    )
    return dict(
        **{name: module.eval() for name, module in modules.items()},
        tokenizer=build_tiny_tokenizer(),
        scheduler=CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER_CONFIG),
    )


def build_tiny_hunyuan_components() -> dict:
    """HunyuanVideo's pipeline components: the 3D transformer, the causal video VAE, a tiny LlamaModel
    and a tiny CLIP (pooled embedding) reading the tiny tokenizer's ids (prompt template:
    `vidinv.models.flow_adapters.hunyuan_template`), the Euler scheduler with its shift."""
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
    from transformers import LlamaConfig, LlamaModel

    from vidinv.models.tiny_configs import (
        HUNYUAN_SCHEDULER_CONFIG,
        HUNYUAN_VAE_FACTORS,
        TINY_HUNYUAN_CONFIG,
        TINY_HUNYUAN_VAE_CONFIG,
        TINY_LLAMA_CONFIG,
    )

    modules = _seeded(
        lambda: dict(
            transformer=HunyuanVideoTransformer3DModel(**TINY_HUNYUAN_CONFIG),
            vae=AutoencoderKLHunyuanVideo(**TINY_HUNYUAN_VAE_CONFIG, **HUNYUAN_VAE_FACTORS),
            text_encoder=LlamaModel(LlamaConfig(**TINY_LLAMA_CONFIG)),
            text_encoder_2=CLIPTextModel(tiny_text_config()),
        )
    )
    return dict(
        **{name: module.eval() for name, module in modules.items()},
        tokenizer=build_tiny_tokenizer(),
        tokenizer_2=build_tiny_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**HUNYUAN_SCHEDULER_CONFIG),
    )


def _tiny_ltx_vae():
    """The tiny LTX-Video VAE with random per-channel latent statistics (its buffers, zeros / ones
    by default), so that LTXPipeline's normalisation is seen by the tests."""
    from diffusers import AutoencoderKLLTXVideo

    from vidinv.models.tiny_configs import LTX_VAE_FACTORS, TINY_LTX_VAE_CONFIG

    vae = AutoencoderKLLTXVideo(**TINY_LTX_VAE_CONFIG, **LTX_VAE_FACTORS)
    channels = vae.latents_mean.shape[0]
    vae.latents_mean.copy_(0.1 * torch.randn(channels))
    vae.latents_std.copy_(0.5 + torch.rand(channels))
    return vae


def build_tiny_ltx_components() -> dict:
    """LTX-Video's pipeline components: the 3D transformer over the packed latent clip, the video VAE
    (32x in space, 8x in time), a tiny T5 reading the tiny tokenizer's ids."""
    from diffusers import LTXVideoTransformer3DModel

    from vidinv.models.tiny_configs import LTX_SCHEDULER_CONFIG, TINY_LTX_CONFIG

    modules = _seeded(
        lambda: dict(
            transformer=LTXVideoTransformer3DModel(**TINY_LTX_CONFIG), vae=_tiny_ltx_vae(), text_encoder=_tiny_t5()
        )
    )
    return dict(
        **{name: module.eval() for name, module in modules.items()},
        tokenizer=build_tiny_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER_CONFIG),
    )


TINY_FLOW_BUILDERS = {
    "tiny-sd3": build_tiny_sd3_components,
    "tiny-flux": build_tiny_flux_components,
    "tiny-wan": build_tiny_wan_components,
    "tiny-wan22": build_tiny_wan22_components,
    "tiny-wan22-a14b": build_tiny_wan22_a14b_components,
    "tiny-ltx": build_tiny_ltx_components,
    "tiny-hunyuan": build_tiny_hunyuan_components,
    "tiny-cogvideox": build_tiny_cogvideox_components,
}


def tiny_flow_pipeline(name: str):
    """The diffusers pipeline of a tiny flow model (`tiny-sd3` | `tiny-flux` | `tiny-wan`):
    `save_pretrained` writes a folder that `vidinv.models.load_models` (and diffusers) read back."""
    import diffusers

    from vidinv.models.tiny_configs import TINY_PIPELINES

    return getattr(diffusers, TINY_PIPELINES[name])(**TINY_FLOW_BUILDERS[name]())
