"""Tiny Stable-Diffusion-shaped models built offline from config with a fixed seed, one per family.

`tiny` has the component classes and interfaces of SD 1.x (UNet2DConditionModel with
cross-attention, AutoencoderKL with an 8x spatial factor, CLIPTextModel, CLIPTokenizer, DDIM
scheduler), small enough that a 16-frame clip runs through inversion and editing in seconds on a
CPU. `tiny-sd2` is SD 2.x-shaped (linear attention projections, a wider GELU text encoder,
v-prediction), `tiny-sdxl` SDXL-shaped (two text encoders, `text_time` added conditioning, several
transformer layers per block, SDXL's block layout and VAE settings); `build_tiny_controlnet`
makes a ControlNet for any of their UNets. Weights are random: they are for exact properties
(reconstruction, chunked == plain, parity with diffusers), not pictures.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TINY_SEED = 0
TEXT_DIM = 32
SD2_TEXT_DIM = 48  # SD 2.x's 1024-dim OpenCLIP text, scaled down as 768 -> 32 is for SD 1.x
SDXL_TEXT_2_DIM = 48  # SDXL's 1280-dim OpenCLIP-bigG text and pooled projection: wider than CLIP-L, as in SDXL
SDXL_TIME_DIM = 8  # addition_time_embed_dim (256 in SDXL)
MAX_TOKENS = 77

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


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    visible += list(range(ord("®"), ord("ÿ") + 1))
    chars = visible[:]
    extra = 0
    for b in range(256):
        if b not in visible:
            visible.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(visible, map(chr, chars)))


def tiny_vocab() -> dict[str, int]:
    """A byte-level CLIP vocabulary without merges: every byte alone and word-final, plus specials."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}


def write_tiny_tokenizer_files(folder: str | Path) -> Path:
    """Write vocab.json and merges.txt for the tiny tokenizer into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(tiny_vocab()), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def build_tiny_tokenizer(**kwargs) -> CLIPTokenizer:
    """The tiny tokenizer, loaded from vocab files it writes to a temporary folder (kwargs: e.g.
    SDXL's second tokenizer pads with `!`)."""
    with tempfile.TemporaryDirectory(prefix="vidinv-tokenizer-") as folder:
        write_tiny_tokenizer_files(folder)
        return CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_TOKENS, **kwargs)


def tiny_text_config(hidden: int = TEXT_DIM, **kwargs) -> CLIPTextConfig:
    """The config of a 2-layer CLIP text tower of width `hidden` over the tiny vocabulary (kwargs:
    hidden_act, projection_dim, ...)."""
    vocab = len(tiny_vocab())
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        hidden_act=kwargs.pop("hidden_act", "quick_gelu"),
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
        **kwargs,
    )


def build_tiny_text_encoder(hidden: int = TEXT_DIM, cls=CLIPTextModel, **kwargs) -> CLIPTextModel:
    """A tiny CLIP text tower (`cls`: CLIPTextModel, or CLIPTextModelWithProjection for SDXL's second)."""
    return cls(tiny_text_config(hidden, **kwargs))


def _seeded(build) -> dict:
    """Modules built by `build()` under seed TINY_SEED, in eval mode; the global RNG is left as it was."""
    saved_rng = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_SEED)
        modules = build()
    finally:
        torch.random.set_rng_state(saved_rng)
    return {name: module.eval() for name, module in modules.items()}


def _sd_components(unet_config: dict, scheduler_config: dict, **text_encoder) -> dict:
    """The five components of an SD 1.x / 2.x-shaped tiny model (seed TINY_SEED)."""
    modules = _seeded(
        lambda: dict(
            unet=UNet2DConditionModel(**unet_config),
            vae=AutoencoderKL(**TINY_VAE_CONFIG),
            text_encoder=build_tiny_text_encoder(**text_encoder),
        )
    )
    return dict(tokenizer=build_tiny_tokenizer(), **modules, scheduler=DDIMScheduler(**scheduler_config))


def build_tiny_components() -> dict:
    """All five components of the SD 1.x-shaped tiny model (seed TINY_SEED)."""
    return _sd_components(TINY_UNET_CONFIG, SD_SCHEDULER_CONFIG)


def build_tiny_sd2_components() -> dict:
    """The SD 2.x-shaped tiny model: wider GELU text encoder (as OpenCLIP through CLIPTextModel), v-prediction."""
    return _sd_components(TINY_SD2_UNET_CONFIG, SD2_SCHEDULER_CONFIG, hidden=SD2_TEXT_DIM, hidden_act="gelu")


def build_tiny_sdxl_components() -> dict:
    """The SDXL-shaped tiny model: CLIPTextModel + CLIPTextModelWithProjection, text_time UNet, upcast VAE."""
    modules = _seeded(
        lambda: dict(
            unet=UNet2DConditionModel(**TINY_SDXL_UNET_CONFIG),
            vae=AutoencoderKL(**TINY_SDXL_VAE_CONFIG),
            text_encoder=build_tiny_text_encoder(),
            text_encoder_2=build_tiny_text_encoder(
                SDXL_TEXT_2_DIM, cls=CLIPTextModelWithProjection, hidden_act="gelu", projection_dim=SDXL_TEXT_2_DIM
            ),
        )
    )
    return dict(
        tokenizer=build_tiny_tokenizer(),
        tokenizer_2=build_tiny_tokenizer(pad_token="!"),
        **modules,
        scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG),
    )


def build_tiny_controlnet(unet) -> ControlNetModel:
    """A ControlNet with `unet`'s encoder (diffusers' `ControlNetModel.from_unet`); its zero
    convolutions get seeded random weights so that its residuals are not zero."""

    def build():
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16, 16))
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            torch.nn.init.normal_(conv.weight, std=0.1)
            torch.nn.init.normal_(conv.bias, std=0.1)
        return {"controlnet": controlnet}

    return _seeded(build)["controlnet"]


def write_tiny_depth_estimator(folder: str | Path) -> Path:
    """A DPT depth estimator of random weights (transformers' `DPTForDepthEstimation`, 32x32 input)
    with its image processor, saved to `folder`: `edit.depth_estimator` for offline tests."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, image_size=32,
        patch_size=8, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
    )  # fmt: skip
    model = _seeded(lambda: {"model": DPTForDepthEstimation(config)})["model"]
    model.save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(folder)
    return Path(folder)


TINY_BUILDERS = {
    "tiny": build_tiny_components,
    "tiny-sd2": build_tiny_sd2_components,
    "tiny-sdxl": build_tiny_sdxl_components,
}
