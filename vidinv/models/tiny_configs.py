"""The built-in tiny models' component configs, as data: read without importing diffusers or
building (and initialising) weights.

    configs = tiny_model_configs("tiny-sdxl")
    # {"unet": ("UNet2DConditionModel", {...}), "vae": ("AutoencoderKL", {...}), ...,
    #  "scheduler": ("DDIMScheduler", {...})}
    TINY_PIPELINES["tiny-sdxl"]          # "StableDiffusionXLPipeline"
    tiny_parameter_counts("tiny-sdxl")   # {"unet": ..., "vae": ..., ...}: modules built on the meta device

`vidinv.models.tiny` (SD 1.x / 2.x / SDXL-shaped) and `vidinv.models.tiny_flow` (SD3, Flux, Wan)
build their components from these configs, under a fixed seed; `vidinv info tiny-*` reads them
from here (as the planner can), in a fraction of a second. A config holds the builder's arguments
(what differs from the class's defaults) and the defaults vidinv reads (Wan's VAE factors); the
full configs are those of `tiny_meta_modules(name)` (no weights: parameters on the meta device).
"""

from __future__ import annotations

import copy

TINY_SEED = 0
TEXT_DIM = 32
SD2_TEXT_DIM = 48  # SD 2.x's 1024-dim OpenCLIP text, scaled down as 768 -> 32 is for SD 1.x
SDXL_TEXT_2_DIM = 48  # SDXL's 1280-dim OpenCLIP-bigG text and pooled projection: wider than CLIP-L, as in SDXL
SDXL_TIME_DIM = 8  # addition_time_embed_dim (256 in SDXL)
MAX_TOKENS = 77
TINY_VOCAB_SIZE = 2 * 256 + 2  # the tiny tokenizer: every byte alone and word-final, <|startoftext|>, <|endoftext|>

# SD 1.x's scheduler settings (scaled-linear betas, no clipping, steps_offset 1).
SD_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)

TINY_UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TEXT_DIM,
    attention_head_dim=8,
    norm_num_groups=16,
)

# SD 2.x: linear projections in the transformers, a 1024-like text width, v-prediction.
TINY_SD2_UNET_CONFIG = TINY_UNET_CONFIG | dict(cross_attention_dim=SD2_TEXT_DIM, use_linear_projection=True)
SD2_SCHEDULER_CONFIG = SD_SCHEDULER_CONFIG | dict(prediction_type="v_prediction")

# SDXL's layout: no attention at full resolution, 1 / 2 / N transformer layers per level, two
# resnets per block, text_time added conditioning (6 time ids + the pooled text embedding).
TINY_SDXL_UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 64),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 3),
    attention_head_dim=(2, 4, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=SDXL_TIME_DIM,
    projection_class_embeddings_input_dim=6 * SDXL_TIME_DIM + SDXL_TEXT_2_DIM,
    cross_attention_dim=TEXT_DIM + SDXL_TEXT_2_DIM,
    norm_num_groups=16,
)

TINY_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(16, 32, 32, 32),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1,
    norm_num_groups=8,
    sample_size=64,
    scaling_factor=0.18215,
)
TINY_SDXL_VAE_CONFIG = TINY_VAE_CONFIG | dict(scaling_factor=0.13025, force_upcast=True)

# --- the flow models (vidinv.models.tiny_flow) ----------------------------------------------------

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
TINY_FLUX_VAE_CONFIG = {**TINY_FLOW_VAE_CONFIG, "scaling_factor": 0.3611, "shift_factor": 0.1159}  # Flux's VAE

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
# AutoencoderKLWan's defaults that vidinv reads (pixels a latent pixel, frames a latent frame)
WAN_VAE_FACTORS = dict(scale_factor_spatial=8, scale_factor_temporal=4)
WAN_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=3.0)  # Wan 2.1's flow_shift at 480p

# Wan 2.2 TI2V-5B's layout scaled down: a 48-channel VAE with residual blocks that first packs 2x2
# pixels into channels (16x in space), its own per-channel latent statistics; per-token timesteps
WAN22_LATENT_CHANNELS = 48
TINY_WAN22_CONFIG = TINY_WAN_CONFIG | dict(in_channels=WAN22_LATENT_CHANNELS, out_channels=WAN22_LATENT_CHANNELS)
TINY_WAN22_VAE_CONFIG = dict(
    base_dim=8,
    decoder_base_dim=8,
    z_dim=WAN22_LATENT_CHANNELS,
    dim_mult=[1, 2, 2, 2],
    num_res_blocks=1,
    is_residual=True,
    in_channels=12,  # 3 channels x 2 x 2 patch pixels
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
    latents_mean=[round(0.05 * ((7 * k) % 11 - 5), 2) for k in range(WAN22_LATENT_CHANNELS)],
    latents_std=[round(1.0 + 0.1 * ((3 * k) % 5), 1) for k in range(WAN22_LATENT_CHANNELS)],
)
WAN22_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=5.0)  # TI2V-5B's sample shift
# Wan 2.2 A14B: two Wan 2.1-shaped experts, the low-noise one (transformer_2) below 0.875 x 1000
WAN22_A14B_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=12.0)  # T2V-A14B's sample shift
# the pipelines' own settings (model_index.json beside the components) of the tiny models that have them
TINY_PIPELINE_SETTINGS = {
    "tiny-wan22": {"expand_timesteps": True},  # TI2V-5B: a timestep per token
    "tiny-wan22-a14b": {"boundary_ratio": 0.875},  # A14B: the experts' boundary, a fraction of 1000 steps
}

# LTX-Video 0.9: one token a latent pixel (patch 1), the rope's 3 axes 4 frequencies each (dim // 6)
TINY_LTX_CONFIG = dict(
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    patch_size=1,
    patch_size_t=1,
    num_attention_heads=2,
    attention_head_dim=12,
    cross_attention_dim=24,  # its attention width (heads x head dim), as LTX-Video's 2048 = 32 x 64
    num_layers=2,
    caption_channels=TEXT_DIM,
)
# LTX-Video 0.9.0's VAE shape scaled down: 4x4 patches and 3 spatio-temporal downsamplings (32x in space,
# 8x in time), timestep_conditioning off (0.9.0, diffusers' default; 0.9.1 conditions its decoder on it)
TINY_LTX_VAE_CONFIG = dict(
    latent_channels=LATENT_CHANNELS,
    block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(8, 8, 8, 8),
    layers_per_block=(1, 1, 1, 1, 1),
    decoder_layers_per_block=(1, 1, 1, 1, 1),
    timestep_conditioning=False,
)
# AutoencoderKLLTXVideo's factors that vidinv reads (pixels a latent pixel, frames a latent frame; unset
# in a config, diffusers computes them from patch_size and the scalings)
LTX_VAE_FACTORS = dict(spatial_compression_ratio=32, temporal_compression_ratio=8)
# LTX-Video's scheduler: mu from the latent clip's tokens (1024 -> 0.95 .. 4096 -> 2.05), sigmas
# stretched to end at 0.1 before the final 0
LTX_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=True,
    base_shift=0.95,
    max_shift=2.05,
    base_image_seq_len=1024,
    max_image_seq_len=4096,
    shift_terminal=0.1,
)

# Flux's T5 and Wan's UMT5 text towers, reading the tiny tokenizer's ids
TINY_T5_CONFIG = dict(vocab_size=TINY_VOCAB_SIZE, d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2)

# HunyuanVideo: its dual- and single-stream 3D transformer (patch 1x2x2, rope split 4 + 6 + 6 of a head
# as its 128 = 16 + 56 + 56), its causal video VAE (8x space, 4x time) scaled down, a LLaMA text tower
# (the pipeline reads its third-last hidden state: 3 layers) and CLIP for the pooled embedding
TINY_HUNYUAN_CONFIG = dict(
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    num_attention_heads=2,
    attention_head_dim=16,  # a width of 32: rows of a batch fill whole SIMD vectors (equal rows stay equal)
    num_layers=1,
    num_single_layers=1,
    num_refiner_layers=1,
    mlp_ratio=2.0,
    text_embed_dim=TEXT_DIM,
    pooled_projection_dim=TEXT_DIM,
    guidance_embeds=True,  # guidance-distilled (its default)
    rope_axes_dim=(4, 6, 6),
)
TINY_HUNYUAN_VAE_CONFIG = dict(latent_channels=LATENT_CHANNELS, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                               norm_num_groups=4)  # fmt: skip
# AutoencoderKLHunyuanVideo's defaults that vidinv reads (its scaling factor, pixels and frames a latent one)
HUNYUAN_VAE_FACTORS = dict(scaling_factor=0.476986, spatial_compression_ratio=8, temporal_compression_ratio=4)
HUNYUAN_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=7.0)  # HunyuanVideo's published shift
TINY_LLAMA_CONFIG = dict(
    vocab_size=TINY_VOCAB_SIZE,
    hidden_size=TEXT_DIM,
    intermediate_size=2 * TEXT_DIM,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=2 * MAX_TOKENS,
    bos_token_id=TINY_VOCAB_SIZE - 2,
    eos_token_id=TINY_VOCAB_SIZE - 1,
    pad_token_id=TINY_VOCAB_SIZE - 1,
)
# the prompt template of the tiny tokenizer (HunyuanVideoPipeline's is in LLaMA-3's chat tokens):
# crop_start drops <|startoftext|> and the 6 byte tokens of "video:", as the pipeline's 95 drop its system turn
TINY_HUNYUAN_TEMPLATE = {"template": "video: {}", "crop_start": 7}

# CogVideoX: its 3D DiT with CogVideoX-5b's rotary embeddings (2b: sinusoidal, also tested), a 64x64
# sample of 9 frames; the causal video VAE (4x in time, 8x in space; CogVideoX-2b's scaling_factor)
TINY_COGVIDEOX_CONFIG = dict(
    num_attention_heads=2,
    attention_head_dim=16,  # rotary split 4 (time) + 6 (height) + 6 (width), as CogVideoX-5b's 64 = 16 + 24 + 24
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    time_embed_dim=16,
    text_embed_dim=TEXT_DIM,
    num_layers=2,
    sample_width=8,
    sample_height=8,
    sample_frames=9,
    max_text_seq_length=T5_TOKENS,
    use_rotary_positional_embeddings=True,
)
TINY_COGVIDEOX_VAE_CONFIG = dict(
    block_out_channels=(8, 16, 16, 16),
    layers_per_block=1,
    norm_num_groups=4,
    sample_height=64,
    sample_width=64,
    temporal_compression_ratio=4,  # the class's default, which vidinv reads
    scaling_factor=1.15258426,  # CogVideoX-2b's (5b: 0.7)
)
# THUDM/CogVideoX-2b's scheduler/scheduler_config.json (CogVideoXDDIMScheduler)
COGVIDEOX_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=True,
    steps_offset=0,
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    rescale_betas_zero_snr=True,
    snr_shift_scale=3.0,
)


def tiny_text_kwargs(hidden: int = TEXT_DIM, **kwargs) -> dict:
    """The CLIPTextConfig arguments of a 2-layer CLIP text tower of width `hidden` over the tiny
    vocabulary (kwargs: hidden_act, projection_dim, ...)."""
    return dict(
        vocab_size=TINY_VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        hidden_act=kwargs.pop("hidden_act", "quick_gelu"),
        bos_token_id=TINY_VOCAB_SIZE - 2,
        eos_token_id=TINY_VOCAB_SIZE - 1,
        pad_token_id=TINY_VOCAB_SIZE - 1,
        **kwargs,
    )


# the diffusers pipeline each tiny model is
TINY_PIPELINES = {
    "tiny": "StableDiffusionPipeline",
    "tiny-sd2": "StableDiffusionPipeline",
    "tiny-sdxl": "StableDiffusionXLPipeline",
    "tiny-sd3": "StableDiffusion3Pipeline",
    "tiny-flux": "FluxPipeline",
    "tiny-wan": "WanPipeline",
    "tiny-wan22": "WanPipeline",
    "tiny-wan22-a14b": "WanPipeline",
    "tiny-ltx": "LTXPipeline",
    "tiny-hunyuan": "HunyuanVideoPipeline",
    "tiny-cogvideox": "CogVideoXPipeline",
}
TOKENIZER = ("CLIPTokenizer", {"model_max_length": MAX_TOKENS})


def _components(name: str) -> dict[str, tuple[str, dict]]:
    clip = ("CLIPTextModel", tiny_text_kwargs())
    if name in ("tiny", "tiny-sd2"):
        sd2 = name == "tiny-sd2"
        return {
            "unet": ("UNet2DConditionModel", TINY_SD2_UNET_CONFIG if sd2 else TINY_UNET_CONFIG),
            "vae": ("AutoencoderKL", TINY_VAE_CONFIG),
            "text_encoder": ("CLIPTextModel", tiny_text_kwargs(SD2_TEXT_DIM, hidden_act="gelu")) if sd2 else clip,
            "tokenizer": TOKENIZER,
            "scheduler": ("DDIMScheduler", SD2_SCHEDULER_CONFIG if sd2 else SD_SCHEDULER_CONFIG),
        }
    if name == "tiny-sdxl":
        text_2 = tiny_text_kwargs(SDXL_TEXT_2_DIM, hidden_act="gelu", projection_dim=SDXL_TEXT_2_DIM)
        return {
            "unet": ("UNet2DConditionModel", TINY_SDXL_UNET_CONFIG),
            "vae": ("AutoencoderKL", TINY_SDXL_VAE_CONFIG),
            "text_encoder": clip,
            "text_encoder_2": ("CLIPTextModelWithProjection", text_2),
            "tokenizer": TOKENIZER,
            "tokenizer_2": (TOKENIZER[0], TOKENIZER[1] | {"pad_token": "!"}),
            "scheduler": ("DDIMScheduler", SD_SCHEDULER_CONFIG),
        }
    if name == "tiny-sd3":  # without T5 (text_encoder_3 = tokenizer_3 = None)
        projected = ("CLIPTextModelWithProjection", tiny_text_kwargs(projection_dim=TEXT_DIM))
        return {
            "transformer": ("SD3Transformer2DModel", TINY_SD3_CONFIG),
            "vae": ("AutoencoderKL", TINY_FLOW_VAE_CONFIG),
            "text_encoder": projected,
            "text_encoder_2": projected,
            "tokenizer": TOKENIZER,
            "tokenizer_2": TOKENIZER,
            "scheduler": ("FlowMatchEulerDiscreteScheduler", SD3_SCHEDULER_CONFIG),
        }
    if name == "tiny-flux":
        return {
            "transformer": ("FluxTransformer2DModel", TINY_FLUX_CONFIG),
            "vae": ("AutoencoderKL", TINY_FLUX_VAE_CONFIG),
            "text_encoder": clip,
            "text_encoder_2": ("T5EncoderModel", TINY_T5_CONFIG),
            "tokenizer": TOKENIZER,
            "tokenizer_2": TOKENIZER,
            "scheduler": ("FlowMatchEulerDiscreteScheduler", FLUX_SCHEDULER_CONFIG),
        }
    if name == "tiny-wan22":
        return {
            "transformer": ("WanTransformer3DModel", TINY_WAN22_CONFIG),
            "vae": ("AutoencoderKLWan", TINY_WAN22_VAE_CONFIG),
            "text_encoder": ("UMT5EncoderModel", TINY_T5_CONFIG),
            "tokenizer": TOKENIZER,
            "scheduler": ("FlowMatchEulerDiscreteScheduler", WAN22_SCHEDULER_CONFIG),
        }
    if name == "tiny-wan22-a14b":
        return {
            "transformer": ("WanTransformer3DModel", TINY_WAN_CONFIG),
            "transformer_2": ("WanTransformer3DModel", TINY_WAN_CONFIG),
            "vae": ("AutoencoderKLWan", TINY_WAN_VAE_CONFIG | WAN_VAE_FACTORS),
            "text_encoder": ("UMT5EncoderModel", TINY_T5_CONFIG),
            "tokenizer": TOKENIZER,
            "scheduler": ("FlowMatchEulerDiscreteScheduler", WAN22_A14B_SCHEDULER_CONFIG),
        }
    if name == "tiny-wan":
        return {
            "transformer": ("WanTransformer3DModel", TINY_WAN_CONFIG),
            "vae": ("AutoencoderKLWan", TINY_WAN_VAE_CONFIG | WAN_VAE_FACTORS),
            "text_encoder": ("UMT5EncoderModel", TINY_T5_CONFIG),
            "tokenizer": TOKENIZER,
            "scheduler": ("FlowMatchEulerDiscreteScheduler", WAN_SCHEDULER_CONFIG),
        }
    if name == "tiny-ltx":
        return {
            "transformer": ("LTXVideoTransformer3DModel", TINY_LTX_CONFIG),
            "vae": ("AutoencoderKLLTXVideo", TINY_LTX_VAE_CONFIG | LTX_VAE_FACTORS),
            "text_encoder": ("T5EncoderModel", TINY_T5_CONFIG),
            "tokenizer": TOKENIZER,
            "scheduler": ("FlowMatchEulerDiscreteScheduler", LTX_SCHEDULER_CONFIG),
        }
    if name == "tiny-cogvideox":
        return {
            "transformer": ("CogVideoXTransformer3DModel", TINY_COGVIDEOX_CONFIG),
            "vae": ("AutoencoderKLCogVideoX", TINY_COGVIDEOX_VAE_CONFIG),
            "text_encoder": ("T5EncoderModel", TINY_T5_CONFIG),
            "tokenizer": TOKENIZER,
            "scheduler": ("CogVideoXDDIMScheduler", COGVIDEOX_SCHEDULER_CONFIG),
        }
    if name == "tiny-hunyuan":
        return {
            "transformer": ("HunyuanVideoTransformer3DModel", TINY_HUNYUAN_CONFIG),
            "vae": ("AutoencoderKLHunyuanVideo", TINY_HUNYUAN_VAE_CONFIG | HUNYUAN_VAE_FACTORS),
            "text_encoder": ("LlamaModel", TINY_LLAMA_CONFIG),
            "text_encoder_2": clip,
            "tokenizer": TOKENIZER,
            "tokenizer_2": TOKENIZER,
            "scheduler": ("FlowMatchEulerDiscreteScheduler", HUNYUAN_SCHEDULER_CONFIG),
        }
    raise KeyError(f"{name!r} is no built-in tiny model ({', '.join(TINY_PIPELINES)})")


def tiny_model_configs(name: str) -> dict[str, tuple[str, dict]]:
    """{component: (class name, config)} of the built-in tiny model `name` (tiny, tiny-sd2,
    tiny-sdxl, tiny-sd3, tiny-flux, tiny-wan), as its pipeline holds them: the denoiser (unet or
    transformer), vae, text_encoder[_2], tokenizer[_2], scheduler. Models and the scheduler are
    configured by these dicts (diffusers: `cls(**config)`, transformers: `cls(cls.config_class(**config))`);
    tokenizers by the arguments of the tiny CLIP tokenizer. Copies: changing them changes nothing
    else. KeyError for other names."""
    return {part: (cls, copy.deepcopy(config)) for part, (cls, config) in _components(name).items()}


TEXT_MODEL_CLASSES = (
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
    "T5EncoderModel",
    "UMT5EncoderModel",
    "LlamaModel",
)


def tiny_meta_modules(name: str) -> dict:
    """{component: torch module} of the tiny model `name`, built on the meta device: full configs
    and parameter shapes, no weights and no initialisation (imports diffusers and transformers)."""
    import diffusers
    import torch
    import transformers

    modules = {}
    with torch.device("meta"):
        for part, (cls_name, config) in tiny_model_configs(name).items():
            if cls_name in TEXT_MODEL_CLASSES:
                cls = getattr(transformers, cls_name)
                modules[part] = cls(cls.config_class(**config))
            elif part not in ("scheduler",) and not part.startswith("tokenizer"):
                modules[part] = getattr(diffusers, cls_name)(**config)
    return modules


def tiny_parameter_counts(name: str) -> dict[str, int]:
    """{component: number of parameters} of the tiny model `name` (from `tiny_meta_modules`)."""
    return {part: sum(p.numel() for p in module.parameters()) for part, module in tiny_meta_modules(name).items()}


def tiny_full_configs(name: str) -> dict[str, tuple[str, dict]]:
    """{component: (class name, full config dict)} of the tiny model's modules (denoiser, vae, text
    encoders: every key of the built module's config, as `dict(config)` / `config.to_dict()` give it),
    from `tiny_meta_modules`; the scheduler's config as `tiny_model_configs` gives it."""
    configs = {
        part: (
            type(module).__name__,
            dict(module.config) if isinstance(module.config, dict) else module.config.to_dict(),
        )
        for part, module in tiny_meta_modules(name).items()
    }
    return configs | {"scheduler": tiny_model_configs(name)["scheduler"]}
