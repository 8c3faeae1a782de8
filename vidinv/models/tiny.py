"""A tiny Stable-Diffusion-shaped model built offline from config with a fixed seed.

Same component classes and interfaces as SD 1.x (UNet2DConditionModel with cross-attention,
AutoencoderKL with an 8x spatial factor, CLIPTextModel, CLIPTokenizer, DDIM scheduler), small
enough that a 16-frame clip runs through inversion and editing in seconds on a CPU. Its weights
are random: it is for exact properties (reconstruction, chunked == plain, parity), not pictures.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TINY_SEED = 0
TEXT_DIM = 32
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


def build_tiny_tokenizer() -> CLIPTokenizer:
    """The tiny tokenizer, loaded from vocab files it writes to a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="vidinv-tokenizer-") as folder:
        write_tiny_tokenizer_files(folder)
        return CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_TOKENS)


def tiny_text_config() -> CLIPTextConfig:
    """The tiny CLIP text tower's config (2 layers, width TEXT_DIM)."""
    return CLIPTextConfig(
        vocab_size=len(tiny_vocab()),
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        hidden_act="quick_gelu",
        bos_token_id=len(tiny_vocab()) - 2,
        eos_token_id=len(tiny_vocab()) - 1,
        pad_token_id=len(tiny_vocab()) - 1,
    )


def build_tiny_text_encoder() -> CLIPTextModel:
    return CLIPTextModel(tiny_text_config())


def build_tiny_components() -> dict:
    """All five components with deterministic random weights (seed TINY_SEED)."""
    saved_rng = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_SEED)
        unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
        vae = AutoencoderKL(**TINY_VAE_CONFIG)
        text_encoder = build_tiny_text_encoder()
    finally:
        torch.random.set_rng_state(saved_rng)
    return dict(
        tokenizer=build_tiny_tokenizer(),
        text_encoder=text_encoder.eval(),
        unet=unet.eval(),
        vae=vae.eval(),
        scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG),
    )
