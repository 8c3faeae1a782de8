"""Random-weight model architectures for the bench scripts (`--arch tiny|sd15`), in one place.

- tiny: the built-in tiny model's shapes (vidinv.models.tiny).
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

ARCH_NAMES = ("tiny", "sd15")

# diffusers' UNet2DConditionModel defaults are SD 1.x's blocks (320/640/1280/1280, 2 layers).
SD15_UNET_CONFIG = {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8}
# SD 1.5's AutoencoderKL: 4 Down/UpEncoderBlock2D, 2 layers each, 32 norm groups
SD15_VAE_CONFIG = {**TINY_VAE_CONFIG, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
                   "norm_num_groups": 32, "sample_size": 512}  # fmt: skip
SD15_TEXT_CONFIG = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}  # fmt: skip

UNET_CONFIGS = {"tiny": TINY_UNET_CONFIG, "sd15": SD15_UNET_CONFIG}
VAE_CONFIGS = {"tiny": TINY_VAE_CONFIG, "sd15": SD15_VAE_CONFIG}


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


def build_text_encoder(arch: str, device, dtype: torch.dtype = torch.float32):
    from transformers import CLIPTextConfig, CLIPTextModel

    from vidinv.models.tiny import build_tiny_text_encoder, tiny_vocab

    torch.manual_seed(TINY_SEED)
    if arch == "tiny":
        return _ready(build_tiny_text_encoder(), device, dtype)
    bos, eos = len(tiny_vocab()) - 2, len(tiny_vocab()) - 1  # the tiny tokenizer's special ids
    config = CLIPTextConfig(**SD15_TEXT_CONFIG, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    return _ready(CLIPTextModel(config), device, dtype)


def build_models(arch: str, device, dtype: torch.dtype = torch.float32):
    """A vidinv `Models` of this arch with random weights (tiny tokenizer, SD's DDIM scheduler)."""
    from diffusers import DDIMScheduler

    from vidinv.models.loading import Models
    from vidinv.models.tiny import SD_SCHEDULER_CONFIG, build_tiny_tokenizer

    device = torch.device(device)
    return Models(
        tokenizer=build_tiny_tokenizer(),
        text_encoder=build_text_encoder(arch, device, dtype),
        unet=build_unet(arch, device, dtype),
        vae=build_vae(arch, device, dtype),
        scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG),
        device=device,
        dtype=dtype,
        source=f"arch:{arch}",
    )


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
