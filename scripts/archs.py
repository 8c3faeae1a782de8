"""Random-weight model architectures for the bench scripts (`--arch tiny|sd15|sdxl|sd3|wan|hunyuan|ltx|cogvideox`), in one place.

- tiny: the built-in tiny model's shapes (vidinv.models.tiny).
- sdxl: the published SDXL base 1.0 shapes: UNet 2567.5 M parameters (3 levels, 1/2/10 transformer
  layers, 2048-d cross-attention, text_time added conditioning), the same VAE shape, CLIP ViT-L/14
  and OpenCLIP ViT-bigG/14 (1280-d, 32 layers, pooled projection 1280) text towers.
- sd15: the published Stable Diffusion 1.5 shapes (docs/methods.md §6): UNet 859.5 M parameters,
  AutoencoderKL 83.7 M, CLIP ViT-L/14 text tower 123.1 M. Random weights give real speed and
  memory figures, not pictures. The tokenizer is the tiny byte-level one (no vocabulary files
  offline); its ids fall inside CLIP's 49408-token embedding, and the text encoder's cost is
  negligible per clip.
- sd3: Stable Diffusion 3 medium as a vidinv `PipelineModels` (a StableDiffusion3Pipeline): the MMDiT
  transformer (2028.3 M parameters, SD3_TRANSFORMER_CONFIG), CLIP ViT-L/14 and OpenCLIP ViT-bigG/14
  text towers with their projections (pooled 768 + 1280), SD3's 16-channel VAE (scaling 1.5305,
  shift 0.0609), FlowMatchEulerDiscreteScheduler(shift=3.0), and no T5 (text_encoder_3 =
  tokenizer_3 = None: diffusers' documented memory-saving way; its 256 text tokens are zeros, so the
  transformer still sees 77 + 256 of them, as with T5).
- wan: Wan 2.1 T2V 1.3B as a `PipelineModels` (a WanPipeline): WanTransformer3DModel (1419.0 M
  parameters in diffusers' count, 30 layers of width 1536), AutoencoderKLWan() with its default
  config (Wan 2.1's 3D causal VAE, 126.9 M, kept in fp32 as vidinv loads it),
  FlowMatchEulerDiscreteScheduler(shift=3.0) (vidinv steps Wan's UniPC flow grid with Euler). The
  text encoder is a 1-layer UMT5EncoderModel of UMT5-XXL's shape (d_model 4096, 64 heads, gated-GELU
  FFN 10240) over the tiny tokenizer's vocabulary, 195.1 M parameters: the real UMT5-XXL encoder is
  5.7 B parameters (24 layers, 256k-token vocabulary), but it runs once per prompt of a stage
  (inversion, edit: once per clip, not per frame or step), and its output (512 tokens of width
  4096) has the real shape, so every transformer frame-call costs what it costs with the real
  encoder. A stage's time includes encoding its prompt with this one layer (the real encoder:
  about 24x that, once per stage).
- hunyuan: HunyuanVideo (hunyuanvideo-community/HunyuanVideo) as a `PipelineModels` (a
  HunyuanVideoPipeline): HunyuanVideoTransformer3DModel of the published config (HUNYUAN_TRANSFORMER_CONFIG:
  20 dual-stream + 40 single-stream blocks, 24 heads x 128 = width 3072, 2 token-refiner blocks, MLP
  ratio 4, patch 1x2x2, 16-channel latents, LLaMA text width 4096, CLIP pooled 768, guidance
  embedded, rope (16, 56, 56); 12.8 B parameters), AutoencoderKLHunyuanVideo() with its default config
  (its causal 3D VAE: 8x space, 4x time, scaling 0.476986), FlowMatchEulerDiscreteScheduler(shift=7.0).
  Its text encoders are a 3-layer LlamaModel of Llava-LLaMA-3-8B's width (4096, 32 heads, 8 KV
  heads, FFN 14336; the pipeline reads its third-last hidden state) and SD 1.5's CLIP-L shape over the tiny vocabulary: the transformer sees text of
  the real shape (256 tokens of width 4096, pooled 768), the real encoders run once per stage.
- ltx: LTX-Video 0.9 (2B, Lightricks/LTX-Video) as a `PipelineModels` (an LTXPipeline):
  LTXVideoTransformer3DModel of the published config (LTX_TRANSFORMER_CONFIG: 28 layers, 32 heads x 64
  = width 2048, cross-attention 2048, 128-channel latents, patch 1 x 1, T5 caption width 4096; 1.9 B
  parameters), AutoencoderKLLTXVideo() with its default config (LTX-Video 0.9.0's VAE: 4x4 patches and
  3 spatio-temporal downsamplings, 32x in space, 8x in time, 128 channels, no decoder timestep
  conditioning), FlowMatchEulerDiscreteScheduler with its published dynamic shift (mu from the latent
  clip's tokens: 1024 -> 0.95, 4096 -> 2.05; sigmas ending at 0.1). Its text encoder is a 1-layer
  T5EncoderModel of T5-XXL's shape (as wan's UMT5 layer): the transformer sees 128 tokens of width 4096.
- cogvideox: CogVideoX-2b (THUDM/CogVideoX-2b) as a `PipelineModels` (a CogVideoXPipeline; a DDPM model, not a
  flow one): CogVideoXTransformer3DModel of the published config (COGVIDEOX_TRANSFORMER_CONFIG: 30 layers,
  30 heads x 64 = width 1920, 16-channel latents, patch 2, time embedding 512, T5 width 4096, 226 text
  tokens, sinusoidal 3D positions; 1.69 B parameters), AutoencoderKLCogVideoX() with its default config
  (CogVideoX-2b's causal 3D VAE: 8x space, 4x time, scaling 1.15258426), CogVideoXDDIMScheduler with the
  published config (v-prediction, zero terminal SNR, snr_shift_scale 3). Its text encoder is a 1-layer
  T5EncoderModel of T5-XXL's shape (as ltx's): the transformer sees 226 tokens of width 4096.

Every builder seeds torch with TINY_SEED first and builds in the asked dtype, so the same arch and
dtype give the same weights.
"""

from __future__ import annotations

import benchlib  # noqa: F401  (puts the repository root on sys.path)
import torch

from vidinv.models.tiny import TINY_SEED, TINY_UNET_CONFIG, TINY_VAE_CONFIG

ARCH_NAMES = ("tiny", "sd15", "sdxl", "sd3", "wan", "wan22", "wan22_a14b", "hunyuan", "ltx", "cogvideox")
# the family of an arch whose name is not its family's (Wan 2.2's second published layout)
ARCH_FAMILY = {"wan22_a14b": "wan22"}

# diffusers' UNet2DConditionModel defaults are SD 1.x's blocks (320/640/1280/1280, 2 layers).
SD15_UNET_CONFIG = {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8}
# SD 1.5's AutoencoderKL: 4 Down/UpEncoderBlock2D, 2 layers each, 32 norm groups
SD15_VAE_CONFIG = {**TINY_VAE_CONFIG, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
                   "norm_num_groups": 32, "sample_size": 512}  # fmt: skip
SD15_TEXT_CONFIG = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}  # fmt: skip

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (the keys that differ from the defaults)
SDXL_UNET_CONFIG = {
    "sample_size": 128, "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), "block_out_channels": (320, 640, 1280),
    "attention_head_dim": (5, 10, 20), "transformer_layers_per_block": (1, 2, 10), "cross_attention_dim": 2048,
    "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}  # fmt: skip
SDXL_VAE_CONFIG = {**SD15_VAE_CONFIG, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
SDXL_TEXT_2_CONFIG = {**SD15_TEXT_CONFIG, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                      "num_attention_heads": 20, "hidden_act": "gelu", "projection_dim": 1280}  # fmt: skip

# Flow transformers (published configs: stabilityai/stable-diffusion-3-medium-diffusers,
# black-forest-labs/FLUX.1-dev, Wan-AI/Wan2.1-T2V-1.3B-Diffusers).
SD3_TRANSFORMER_CONFIG = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "num_layers": 24, "attention_head_dim": 64,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048, "out_channels": 16, "pos_embed_max_size": 192,
}  # fmt: skip
FLUX_TRANSFORMER_CONFIG = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}  # fmt: skip
WAN_TRANSFORMER_CONFIG = {
    "patch_size": (1, 2, 2), "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960, "num_layers": 30, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "eps": 1e-6,
}  # fmt: skip
FLOW_VAE_CONFIG = {**SD15_VAE_CONFIG, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False}
SD3_VAE_CONFIG = {**FLOW_VAE_CONFIG, "sample_size": 1024, "scaling_factor": 1.5305, "shift_factor": 0.0609}
WAN_VAE_CONFIG: dict = {}  # AutoencoderKLWan's defaults are Wan 2.1's VAE
# Wan-AI/Wan2.2-TI2V-5B-Diffusers: 30 layers of 24 heads x 128 (width 3072) on 48-channel latents;
# Wan-AI/Wan2.2-T2V-A14B-Diffusers: each of its two experts 40 layers of 40 heads x 128 (width 5120)
WAN22_TRANSFORMER_CONFIG = {**WAN_TRANSFORMER_CONFIG, "num_attention_heads": 24, "in_channels": 48, "out_channels": 48,
                            "ffn_dim": 14336, "rope_max_seq_len": 1024}  # fmt: skip
WAN22_A14B_TRANSFORMER_CONFIG = {
    **WAN_TRANSFORMER_CONFIG,
    "num_attention_heads": 40,
    "ffn_dim": 13824,
    "num_layers": 40,
}
# TI2V-5B's VAE: 2x2 pixels packed into 12 channels, residual blocks, 48-channel latents, 16x in space
# (its per-channel latent statistics do not change a shape: zeros and ones here)
WAN22_VAE_CONFIG = {"base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                    "temperal_downsample": [False, True, True], "is_residual": True, "in_channels": 12,
                    "out_channels": 12, "patch_size": 2, "scale_factor_spatial": 16, "scale_factor_temporal": 4,
                    "latents_mean": [0.0] * 48, "latents_std": [1.0] * 48}  # fmt: skip
# the pipelines' own settings of the Wan 2.2 archs (WanPipeline's model_index.json)
PIPELINE_SETTINGS = {"wan22": {"expand_timesteps": True}, "wan22_a14b": {"boundary_ratio": 0.875}}
# hunyuanvideo-community/HunyuanVideo transformer/config.json (diffusers' defaults are these)
HUNYUAN_TRANSFORMER_CONFIG = {
    "in_channels": 16, "out_channels": 16, "num_attention_heads": 24, "attention_head_dim": 128, "num_layers": 20,
    "num_single_layers": 40, "num_refiner_layers": 2, "mlp_ratio": 4.0, "patch_size": 2, "patch_size_t": 1,
    "qk_norm": "rms_norm", "guidance_embeds": True, "text_embed_dim": 4096, "pooled_projection_dim": 768,
    "rope_theta": 256.0, "rope_axes_dim": (16, 56, 56),
}  # fmt: skip
HUNYUAN_VAE_CONFIG: dict = {}  # AutoencoderKLHunyuanVideo's defaults are HunyuanVideo's VAE
# Lightricks/LTX-Video transformer/config.json (0.9.0; diffusers' defaults are these)
LTX_TRANSFORMER_CONFIG = {
    "in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1, "num_attention_heads": 32,
    "attention_head_dim": 64, "cross_attention_dim": 2048, "num_layers": 28, "caption_channels": 4096,
    "qk_norm": "rms_norm_across_heads", "activation_fn": "gelu-approximate",
}  # fmt: skip
LTX_VAE_CONFIG: dict = {}  # AutoencoderKLLTXVideo's defaults are LTX-Video 0.9.0's VAE
# THUDM/CogVideoX-2b transformer/config.json (diffusers' defaults are these)
COGVIDEOX_TRANSFORMER_CONFIG = {
    "num_attention_heads": 30, "attention_head_dim": 64, "in_channels": 16, "out_channels": 16, "time_embed_dim": 512,
    "text_embed_dim": 4096, "num_layers": 30, "patch_size": 2, "sample_width": 90, "sample_height": 60,
    "sample_frames": 49, "max_text_seq_length": 226, "use_rotary_positional_embeddings": False,
}  # fmt: skip
COGVIDEOX_VAE_CONFIG: dict = {}  # AutoencoderKLCogVideoX's defaults are CogVideoX-2b's VAE
# three decoder layers of Llava-LLaMA-3-8B (HunyuanVideo's text encoder has 32; its pipeline reads the
# third-last hidden state, so one layer counts), over the tiny vocabulary
HUNYUAN_TEXT_CONFIG = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
                       "num_key_value_heads": 8, "num_hidden_layers": 3, "rope_theta": 500000.0}  # fmt: skip
# SD3's CLIP ViT-L/14 with its projection (pooled 768; with bigG's 1280: the transformer's 2048)
SD3_TEXT_CONFIG = {**SD15_TEXT_CONFIG, "projection_dim": 768}
# one encoder layer of google/umt5-xxl (Wan 2.1's text encoder has 24), over the tiny vocabulary
WAN_TEXT_CONFIG = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_heads": 64, "num_layers": 1,
                   "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32,
                   "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6}  # fmt: skip

UNET_CONFIGS = {"tiny": TINY_UNET_CONFIG, "sd15": SD15_UNET_CONFIG, "sdxl": SDXL_UNET_CONFIG}
UNET_ARCHS = tuple(UNET_CONFIGS)  # the archs with a UNet (bench_attention's)
VAE_CONFIGS = {
    "tiny": TINY_VAE_CONFIG, "sd15": SD15_VAE_CONFIG, "sdxl": SDXL_VAE_CONFIG, "sd3": SD3_VAE_CONFIG,
    "flux": {**FLOW_VAE_CONFIG, "scaling_factor": 0.3611, "shift_factor": 0.1159}, "wan": WAN_VAE_CONFIG,
    "wan22": WAN22_VAE_CONFIG, "wan22_a14b": WAN_VAE_CONFIG,
    "hunyuan": HUNYUAN_VAE_CONFIG, "ltx": LTX_VAE_CONFIG, "cogvideox": COGVIDEOX_VAE_CONFIG,
}  # fmt: skip
TRANSFORMER_CONFIGS = {"sd3": SD3_TRANSFORMER_CONFIG, "flux": FLUX_TRANSFORMER_CONFIG, "wan": WAN_TRANSFORMER_CONFIG,
                       "wan22": WAN22_TRANSFORMER_CONFIG, "wan22_a14b": WAN22_A14B_TRANSFORMER_CONFIG,
                       "hunyuan": HUNYUAN_TRANSFORMER_CONFIG, "ltx": LTX_TRANSFORMER_CONFIG,
                       "cogvideox": COGVIDEOX_TRANSFORMER_CONFIG}  # fmt: skip
# text tokens per frame-call: CLIP 77 + T5 256 (SD3), T5 512 (Flux, Wan), LLaMA 256 (HunyuanVideo), T5 128
# (LTX-Video); pooled width (Wan, LTX-Video: none)
# T5 226 (CogVideoX)
FLOW_TEXT = {"sd3": (77 + 256, 2048), "flux": (512, 768), "wan": (512, None), "wan22": (512, None),
             "wan22_a14b": (512, None), "hunyuan": (256, 768), "ltx": (128, None),
             "cogvideox": (226, None)}  # fmt: skip
# the adapter-called transformers (CogVideoX: a DDPM one), counted by flow_frame_flops; all but flux by build_models
FLOW_ARCHS = ("sd3", "flux", "wan", "wan22", "wan22_a14b", "hunyuan", "ltx", "cogvideox")
# native video models: latent frames = 1 + (frames - 1) / temporal factor
VIDEO_ARCHS = ("wan", "wan22", "wan22_a14b", "hunyuan", "ltx", "cogvideox")
VIDEO_VAES = {"wan": "AutoencoderKLWan", "wan22": "AutoencoderKLWan", "wan22_a14b": "AutoencoderKLWan",
              "hunyuan": "AutoencoderKLHunyuanVideo", "ltx": "AutoencoderKLLTXVideo",
              "cogvideox": "AutoencoderKLCogVideoX"}  # fmt: skip
# the video VAEs' (temporal, spatial) factors: frames a latent frame after the first, pixels a latent pixel
VIDEO_FACTORS = {
    "wan": (4, 8),
    "wan22": (4, 16),
    "wan22_a14b": (4, 8),
    "hunyuan": (4, 8),
    "ltx": (8, 32),
    "cogvideox": (4, 8),
}


def add_model_args(parser, *, pretrained: str | None = "tiny", device: str = "auto", what: str = "model") -> None:
    """The model options the bench scripts share: --pretrained, --arch, --device, --dtype, --threads."""
    parser.add_argument("--pretrained", default=pretrained, help="model.pretrained, used when --arch is not given")
    parser.add_argument("--arch", choices=ARCH_NAMES, default=None, help=f"random-weight {what} of this shape")
    parser.add_argument("--device", default=device)
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")


def _build(make, device, dtype: torch.dtype) -> torch.nn.Module:
    """make() seeded with TINY_SEED and constructed in `dtype` (torch's default dtype while it builds,
    as transformers' from_config(torch_dtype=...) does: no fp32 copy of a 2 B-parameter model on the
    way), then on `device`, in eval mode, frozen. Buffers a module computes in fp32 at init (SD3's
    position table, Wan's rotary table) stay fp32, as diffusers keeps Wan's `rope` on loading (and
    no `.to(dtype)`: diffusers warns on each)."""
    torch.manual_seed(TINY_SEED)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        module = make()
    finally:
        torch.set_default_dtype(default)
    return module.to(device=device).eval().requires_grad_(False)


def family_of_arch(arch: str) -> str:
    """The family (vidinv.models.families) of a flow arch: its name, or ARCH_FAMILY's."""
    return ARCH_FAMILY.get(arch, arch)


def build_unet(arch: str, device, dtype: torch.dtype = torch.float32):
    from diffusers import UNet2DConditionModel

    return _build(lambda: UNet2DConditionModel(**UNET_CONFIGS[arch]), device, dtype)


def build_transformer(arch: str, device, dtype: torch.dtype = torch.float32):
    """The flow transformer of `arch` (sd3 | flux | wan | hunyuan: its family's denoiser class)."""
    import diffusers

    from vidinv.models.families import FAMILIES

    cls = getattr(diffusers, FAMILIES[family_of_arch(arch)].denoiser)
    return _build(lambda: cls(**TRANSFORMER_CONFIGS[arch]), device, dtype)


def build_vae(arch: str, device, dtype: torch.dtype = torch.float32):
    """The arch's VAE (wan, hunyuan: their 3D causal video VAEs, VIDEO_VAES)."""
    import diffusers

    cls = getattr(diffusers, VIDEO_VAES.get(arch, "AutoencoderKL"))
    return _build(lambda: cls(**VAE_CONFIGS[arch]), device, dtype)


def build_text_encoder(arch: str, device, dtype: torch.dtype = torch.float32, *, second: bool = False):
    """The arch's text encoder (`second`: SDXL's / SD3's OpenCLIP-bigG CLIPTextModelWithProjection;
    sd3's first is CLIP-L with its projection; wan's a 1-layer UMT5 of UMT5-XXL's width)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, UMT5Config, UMT5EncoderModel

    from vidinv.models.tiny import build_tiny_text_encoder, tiny_vocab

    if arch == "tiny":
        return _build(build_tiny_text_encoder, device, dtype)
    if arch == "wan":
        config = UMT5Config(**WAN_TEXT_CONFIG, vocab_size=len(tiny_vocab()))
        return _build(lambda: UMT5EncoderModel(config), device, dtype)
    if arch in ("ltx", "cogvideox"):  # one T5-XXL encoder layer (their text encoders have 24), as wan's UMT5 layer
        from transformers import T5Config, T5EncoderModel

        config = T5Config(**WAN_TEXT_CONFIG, vocab_size=len(tiny_vocab()))
        return _build(lambda: T5EncoderModel(config), device, dtype)
    bos, eos = len(tiny_vocab()) - 2, len(tiny_vocab()) - 1  # the tiny tokenizer's special ids
    if arch == "hunyuan" and not second:  # LLaMA first, CLIP-L (pooled) second
        from transformers import LlamaConfig, LlamaModel

        llama = LlamaConfig(**HUNYUAN_TEXT_CONFIG, vocab_size=len(tiny_vocab()), bos_token_id=bos, eos_token_id=eos)
        return _build(lambda: LlamaModel(llama), device, dtype)
    projected = arch != "hunyuan" and (second or arch == "sd3")
    fields = SDXL_TEXT_2_CONFIG if projected and second else SD3_TEXT_CONFIG if arch == "sd3" else SD15_TEXT_CONFIG
    config = CLIPTextConfig(**fields, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    cls = CLIPTextModelWithProjection if projected else CLIPTextModel
    return _build(lambda: cls(config), device, dtype)


def build_models(arch: str, device, dtype: torch.dtype = torch.float32):
    """A vidinv `Models` of this arch with random weights (tiny tokenizer, SD's DDIM scheduler);
    sd3 / wan: a `PipelineModels` (`build_flow_models`)."""
    from diffusers import DDIMScheduler

    from vidinv.models.family import family_of_components
    from vidinv.models.loading import Models
    from vidinv.models.tiny import SD_SCHEDULER_CONFIG, build_tiny_tokenizer

    if arch in FLOW_ARCHS:
        return build_flow_models(arch, device, dtype)
    device = torch.device(device)
    parts = dict(
        tokenizer=build_tiny_tokenizer(),
        text_encoder=build_text_encoder(arch, device, dtype),
        unet=build_unet(arch, device, dtype),
        vae=build_vae(arch, device, dtype),
        scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG),
    )
    if arch == "sdxl":
        parts |= dict(
            tokenizer_2=build_tiny_tokenizer(), text_encoder_2=build_text_encoder(arch, device, dtype, second=True)
        )
    return Models(**parts, device=device, dtype=dtype, source=f"arch:{arch}", family=family_of_components(parts))


def build_flow_models(arch: str, device, dtype: torch.dtype = torch.float32):
    """A vidinv `PipelineModels` of `arch` (sd3 | wan | hunyuan) with random weights: its diffusers pipeline
    built from the published shapes (module docstring), the tiny tokenizer(s), the pipeline's default
    text sequence (SD3 77 + 256 tokens, Wan 512, HunyuanVideo 256); Wan's VAE in fp32."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    from vidinv.models.families import FAMILIES
    from vidinv.models.flow import PipelineModels, component_dtype
    from vidinv.models.tiny import build_tiny_tokenizer
    from vidinv.models.tiny_configs import (
        COGVIDEOX_SCHEDULER_CONFIG,
        HUNYUAN_SCHEDULER_CONFIG,
        LTX_SCHEDULER_CONFIG,
        WAN22_A14B_SCHEDULER_CONFIG,
        WAN22_SCHEDULER_CONFIG,
    )
    from vidinv.models.tiny_flow import SD3_SCHEDULER_CONFIG, WAN_SCHEDULER_CONFIG

    if arch not in ("sd3", "wan", "wan22", "wan22_a14b", "hunyuan", "ltx", "cogvideox"):
        raise ValueError(
            f"no random-weight pipeline for arch {arch!r} (sd3, wan, wan22(_a14b), hunyuan, ltx, cogvideox)"
        )
    device = torch.device(device)
    schedulers = {"sd3": SD3_SCHEDULER_CONFIG, "wan": WAN_SCHEDULER_CONFIG, "wan22": WAN22_SCHEDULER_CONFIG,
                  "wan22_a14b": WAN22_A14B_SCHEDULER_CONFIG, "hunyuan": HUNYUAN_SCHEDULER_CONFIG,
                  "ltx": LTX_SCHEDULER_CONFIG, "cogvideox": COGVIDEOX_SCHEDULER_CONFIG}  # fmt: skip
    family = FAMILIES[family_of_arch(arch)]
    parts = dict(
        transformer=build_transformer(arch, device, dtype),
        vae=build_vae(arch, device, component_dtype(family, "vae", dtype)),
        text_encoder=build_text_encoder(arch, device, dtype),
        tokenizer=build_tiny_tokenizer(),
        scheduler=(_cogvideox_scheduler if arch == "cogvideox" else FlowMatchEulerDiscreteScheduler)(
            **schedulers[arch]
        ),
    )
    if arch == "hunyuan":
        parts |= dict(
            text_encoder_2=build_text_encoder(arch, device, dtype, second=True), tokenizer_2=build_tiny_tokenizer()
        )
    if arch == "sd3":
        parts |= dict(
            text_encoder_2=build_text_encoder(arch, device, dtype, second=True),
            tokenizer_2=build_tiny_tokenizer(),
            text_encoder_3=None,
            tokenizer_3=None,
        )
    if "boundary_ratio" in PIPELINE_SETTINGS.get(arch, {}):  # Wan 2.2 A14B: the low-noise expert, of the same shape
        torch.manual_seed(TINY_SEED + 1)
        parts["transformer_2"] = build_transformer(arch, device, dtype)
    pipeline_class = getattr(diffusers, family.pipeline)
    pipeline = pipeline_class(**parts, **PIPELINE_SETTINGS.get(arch, {}))
    return PipelineModels(pipeline, family, device, dtype, f"arch:{arch}", family.t5_tokens)


def _cogvideox_scheduler(**config):
    """CogVideoX-2b's published CogVideoXDDIMScheduler (a DDPM grid: v-prediction, zero terminal SNR)."""
    from diffusers import CogVideoXDDIMScheduler

    return CogVideoXDDIMScheduler(**config)


def models_for(config, arch: str | None):
    """The models a job with `config` would load (arch None: config.model.pretrained), or a
    random-weight `arch`, with the configured cross-frame attention installed either way (on a flow
    transformer too; Wan gets none: it attends across frames itself)."""
    from vidinv.attention.inflate import install_from_config
    from vidinv.jobs.common import load_models_for
    from vidinv.models import resolve_device, resolve_dtype

    if arch is None:
        return load_models_for(config)
    device = resolve_device(config.model.device)
    models = build_models(arch, device, resolve_dtype(config.model.dtype, device))
    install_from_config(models.denoiser, config.model)
    return models


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def is_video(models) -> bool:
    """A native video model (Wan): counted in latent frames."""
    return bool(getattr(models, "video", False))


def latent_frames(models, frames: int) -> int:
    """The latent frames of a clip of `frames` frames: 1 + (frames - 1) / 4 on Wan, else `frames`."""
    from vidinv.models.causal_vae import latent_frame_count, temporal_factor

    return latent_frame_count(frames, temporal_factor(models.vae.config))


def frame_flops(models, height: int, width: int, frames: int = 1) -> dict[str, int]:
    """FLOPs (torch.utils.flop_counter) of one UNet frame-call with the model's own text conditioning
    (SDXL: its added conditioning) and of one frame's VAE encode / decode (the VAE's own calls) at height x width. Works on
    meta-device models (`build_models(arch, "meta")`): shapes only, no memory, no compute. A flow
    model (`PipelineModels`): its prompt encoded once, then counted on meta-device copies of its
    transformer and VAE (`flow_unit_flops`; Wan: per latent frame of a `frames`-frame clip)."""
    from vidinv.attention import run_unet
    from vidinv.models import encode_text

    if hasattr(models, "pipeline"):
        from vidinv.models.flow import flow_condition

        with torch.device("meta"):
            transformer, vae = (type(m).from_config(m.config) for m in (models.transformer, models.vae))
        cond = flow_condition(models, [""]).to("meta")
        per_token = getattr(models, "per_token_timesteps", False)
        return flow_unit_flops(models.family, transformer, vae, cond, height, width, frames, per_token=per_token)
    device, dtype = models.device, models.dtype
    factor = 2 ** (len(models.vae.config.block_out_channels) - 1)
    latent = torch.zeros(1, 1, models.vae.config.latent_channels, height // factor, width // factor, device=device)
    image = torch.zeros(1, 3, height, width, device=device)
    text = encode_text(models, [""], size=(height, width))
    return {
        "unet_call": benchlib.count_flops(lambda: run_unet(models.unet, latent.to(dtype), 500, text)),
        "vae_encode": benchlib.count_flops(lambda: models.vae.encode(image.to(models.vae.dtype))),
        "vae_decode": benchlib.count_flops(lambda: models.vae.decode(latent[0].to(models.vae.dtype))),
    }


def flow_unit_flops(
    family, transformer, vae, cond, height: int, width: int, frames: int = 1, *, per_token: bool = False
) -> dict[str, int]:
    """FLOPs of one transformer frame-call (as vidinv.models.flow calls it, with condition `cond`) and
    of one frame's VAE encode / decode at height x width, on the device the modules are on (meta:
    shapes only). Wan: one call on the latent clip of `frames` frames (1 + (frames - 1) / 4 latent
    frames; its attention spans them all) divided by its latent frames, the causal VAE's encode of the
    clip and decode of its latents (vidinv.models.causal_vae, group by group) divided by `frames`.
    `family`: its record (vidinv.models.families) or name; `per_token`: the timestep given per token
    (Wan 2.2 TI2V, `vidinv.models.flow.token_timesteps`)."""
    from einops import rearrange

    from vidinv.models.causal_vae import CausalDecoder, CausalEncoder, latent_frame_count, temporal_factor
    from vidinv.models.clip_vae import is_clip_video_vae
    from vidinv.models.families import family_record
    from vidinv.models.flow import token_timesteps
    from vidinv.models.vae import latent_channels, spatial_factor

    family = family_record(family)
    call = family.adapter.call
    device = next(transformer.parameters()).device
    count = benchlib.count_flops
    if not family.video:
        latent = torch.zeros(1, vae.config.latent_channels, height // 8, width // 8, device=device)
        image = torch.zeros(1, 3, height, width, device=device)
        return {
            "unet_call": count(lambda: call(transformer, latent, 500.0, cond)),
            "vae_encode": count(lambda: vae.encode(image)),
            "vae_decode": count(lambda: vae.decode(latent)),
        }
    spatial, lf = spatial_factor(vae.config), latent_frame_count(frames, temporal_factor(vae.config))
    latents = torch.zeros(1, lf, latent_channels(vae.config), height // spatial, width // spatial, device=device)
    clip = torch.zeros(frames, 3, height, width, device=device)
    t = token_timesteps(transformer, latents, 500.0) if per_token else 500.0
    if is_clip_video_vae(vae):  # HunyuanVideo: diffusers' one call over the clip (vidinv.models.clip_vae)
        return {
            "unet_call": round(count(lambda: call(transformer, latents, t, cond)) / lf),
            "vae_encode": round(count(lambda: vae.encode(rearrange(clip, "t c h w -> 1 c t h w"))) / frames),
            "vae_decode": round(count(lambda: vae.decode(rearrange(latents, "1 f c h w -> 1 c f h w"))) / frames),
        }

    def decode():  # CausalDecoder.push's groups (push itself ends with a copy to the CPU: not on meta)
        decoder = CausalDecoder(vae)
        for z in latents[0]:
            decoder.run(z[None, :, None])

    return {
        "unet_call": round(count(lambda: call(transformer, latents, t, cond)) / lf),
        "vae_encode": round(count(lambda: CausalEncoder(vae).push(clip)) / frames),
        "vae_decode": round(count(decode) / frames),
    }


def flow_frame_flops(arch: str, height: int, width: int, frames: int = 1) -> tuple[dict[str, int], int]:
    """FLOPs of one transformer frame-call (as vidinv.models.flow calls it, with the family's text
    tokens, FLOW_TEXT) and of one frame's VAE encode / decode at height x width, counted on the meta
    device (`flow_unit_flops`; Wan per latent frame of a `frames`-frame clip); and the transformer's
    parameters."""
    from vidinv.models.flow import FlowCondition

    with torch.device("meta"):
        transformer, vae = build_transformer(arch, "meta"), build_vae(arch, "meta")
        tokens, pooled = FLOW_TEXT[arch]
        cond = FlowCondition(
            torch.zeros(1, tokens, 4096),
            None if pooled is None else torch.zeros(1, pooled),
            torch.zeros(tokens, 3),
            torch.ones(1) if arch in ("flux", "hunyuan") else None,  # guidance-embedded
            torch.ones(1, tokens) if arch in ("hunyuan", "ltx") else None,  # their text tokens' mask, all attended
        )
    per_token = PIPELINE_SETTINGS.get(arch, {}).get("expand_timesteps", False)
    flops = flow_unit_flops(family_of_arch(arch), transformer, vae, cond, height, width, frames, per_token=per_token)
    return flops, parameters(transformer)
