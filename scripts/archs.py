"""Random-weight model architectures for the bench scripts (`--arch tiny|sd15`), in one place.

- tiny: the built-in tiny model's shapes (vidinv.models.tiny).
- sdxl: the published SDXL base 1.0 shapes: UNet 2567.5 M parameters (3 levels, 1/2/10 transformer
  layers, 2048-d cross-attention, text_time added conditioning), the same VAE shape, CLIP ViT-L/14
  and OpenCLIP ViT-bigG/14 (1280-d, 32 layers, pooled projection 1280) text towers.
- sd15: the published Stable Diffusion 1.5 shapes (shared docs, methods.md §6): UNet 859.5 M parameters,
  AutoencoderKL 83.7 M, CLIP ViT-L/14 text tower 123.1 M. Random weights give real speed and
  memory figures, not pictures. The tokenizer is the tiny byte-level one (no vocabulary files
  offline); its ids fall inside CLIP's 49408-token embedding, and the text encoder's cost is
  negligible per clip.

Every builder seeds torch with TINY_SEED first, so the same arch gives the same weights.
"""

from __future__ import annotations

import benchlib  # noqa: F401  (puts the repository root on sys.path)
import torch

from vidinv.models.tiny import TINY_SEED, TINY_UNET_CONFIG, TINY_VAE_CONFIG

ARCH_NAMES = ("tiny", "sd15", "sdxl")

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

UNET_CONFIGS = {"tiny": TINY_UNET_CONFIG, "sd15": SD15_UNET_CONFIG, "sdxl": SDXL_UNET_CONFIG}
VAE_CONFIGS = {"tiny": TINY_VAE_CONFIG, "sd15": SD15_VAE_CONFIG, "sdxl": SDXL_VAE_CONFIG}


def add_model_args(parser, *, pretrained: str | None = "tiny", device: str = "auto", what: str = "model") -> None:
    """The model options the bench scripts share: --pretrained, --arch, --device, --dtype, --threads."""
    parser.add_argument("--pretrained", default=pretrained, help="model.pretrained, used when --arch is not given")
    parser.add_argument("--arch", choices=ARCH_NAMES, default=None, help=f"random-weight {what} of this shape")
    parser.add_argument("--device", default=device)
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")


def _ready(module: torch.nn.Module, device, dtype: torch.dtype) -> torch.nn.Module:
    module = module.to(device)
    return (module if dtype == torch.float32 else module.to(dtype)).eval().requires_grad_(False)


def build_unet(arch: str, device, dtype: torch.dtype = torch.float32):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(TINY_SEED)
    return _ready(UNet2DConditionModel(**UNET_CONFIGS[arch]), device, dtype)


def build_vae(arch: str, device, dtype: torch.dtype = torch.float32):
    from diffusers import AutoencoderKL

    torch.manual_seed(TINY_SEED)
    return _ready(AutoencoderKL(**VAE_CONFIGS[arch]), device, dtype)


def build_text_encoder(arch: str, device, dtype: torch.dtype = torch.float32, *, second: bool = False):
    """The arch's text encoder (`second`: SDXL's CLIPTextModelWithProjection)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from vidinv.models.tiny import build_tiny_text_encoder, tiny_vocab

    torch.manual_seed(TINY_SEED)
    if arch == "tiny":
        return _ready(build_tiny_text_encoder(), device, dtype)
    bos, eos = len(tiny_vocab()) - 2, len(tiny_vocab()) - 1  # the tiny tokenizer's special ids
    fields = SDXL_TEXT_2_CONFIG if second else SD15_TEXT_CONFIG
    config = CLIPTextConfig(**fields, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    return _ready((CLIPTextModelWithProjection if second else CLIPTextModel)(config), device, dtype)


def build_models(arch: str, device, dtype: torch.dtype = torch.float32):
    """A vidinv `Models` of this arch with random weights (tiny tokenizer, SD's DDIM scheduler)."""
    from diffusers import DDIMScheduler

    from vidinv.models.family import family_of_components
    from vidinv.models.loading import Models
    from vidinv.models.tiny import SD_SCHEDULER_CONFIG, build_tiny_tokenizer

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


def models_for(config, arch: str | None):
    """The models a job with `config` would load (arch None: config.model.pretrained), or a
    random-weight `arch`, with the configured cross-frame attention installed either way."""
    from vidinv.attention.inflate import install_from_config
    from vidinv.jobs.common import load_models_for
    from vidinv.models import resolve_device, resolve_dtype

    if arch is None:
        return load_models_for(config)
    device = resolve_device(config.model.device)
    models = build_models(arch, device, resolve_dtype(config.model.dtype, device))
    install_from_config(models.unet, config.model)
    return models


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def frame_flops(models, height: int, width: int) -> dict[str, int]:
    """FLOPs (torch.utils.flop_counter) of one UNet frame-call with the model's own text conditioning
    (SDXL: its added conditioning) and of one frame's VAE encode / decode (the VAE's own calls) at height x width. Works on
    meta-device models (`build_models(arch, "meta")`): shapes only, no memory, no compute."""
    from vidinv.attention import run_unet
    from vidinv.models import encode_text

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


# Flow transformers (published configs: stabilityai/stable-diffusion-3-medium-diffusers,
# black-forest-labs/FLUX.1-dev), for counting only (bench_flops builds them on the meta device).
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
FLOW_VAE_CONFIG = {**SD15_VAE_CONFIG, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False}
# text tokens per frame-call: CLIP 77 + T5 256 (SD3), T5 512 (Flux); pooled width
FLOW_TEXT = {"sd3": (77 + 256, 2048), "flux": (512, 768)}
FLOW_ARCHS = ("sd3", "flux")


def flow_frame_flops(arch: str, height: int, width: int) -> tuple[dict[str, int], int]:
    """FLOPs of one transformer frame-call (as vidinv.models.flow calls it) and of one frame's VAE
    encode / decode at height x width, counted on the meta device; and the transformer's parameters."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

    from vidinv.models.flow import CALLS, FlowCondition

    with torch.device("meta"):
        cls, config = (
            (SD3Transformer2DModel, SD3_TRANSFORMER_CONFIG)
            if arch == "sd3"
            else (FluxTransformer2DModel, FLUX_TRANSFORMER_CONFIG)
        )
        transformer = cls(**config).eval()
        vae = AutoencoderKL(**FLOW_VAE_CONFIG).eval()
        tokens, pooled = FLOW_TEXT[arch]
        cond = FlowCondition(
            torch.zeros(1, tokens, 4096),
            torch.zeros(1, pooled),
            torch.zeros(tokens, 3),
            torch.ones(1) if arch == "flux" else None,
        )
        latent = torch.zeros(1, 16, height // 8, width // 8)
        image = torch.zeros(1, 3, height, width)
        flops = {
            "unet_call": benchlib.count_flops(lambda: CALLS[arch](transformer, latent, 500.0, cond)),
            "vae_encode": benchlib.count_flops(lambda: vae.encode(image)),
            "vae_decode": benchlib.count_flops(lambda: vae.decode(latent)),
        }
    return flops, parameters(transformer)
