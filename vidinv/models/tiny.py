"""Tiny Stable-Diffusion-shaped models built offline from config with a fixed seed, one per family.

`tiny` has the component classes and interfaces of SD 1.x (UNet2DConditionModel with
cross-attention, AutoencoderKL with an 8x spatial factor, CLIPTextModel, CLIPTokenizer, DDIM
scheduler), small enough that a 16-frame clip runs through inversion and editing in seconds on a
CPU. `tiny-sd2` is SD 2.x-shaped (linear attention projections, a wider GELU text encoder,
v-prediction), `tiny-sdxl` SDXL-shaped (two text encoders, `text_time` added conditioning, several
transformer layers per block, SDXL's block layout and VAE settings); `build_tiny_controlnet`
makes a ControlNet for any of their UNets. Weights are random: they are for exact properties
(reconstruction, chunked == plain, parity with diffusers), not pictures. Their configs are data in
`vidinv.models.tiny_configs` (read without building a model).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from vidinv.models.tiny_configs import (  # the configs, as data (re-exported here)
    MAX_TOKENS,
    SD2_SCHEDULER_CONFIG,
    SD2_TEXT_DIM,
    SD_SCHEDULER_CONFIG,
    SDXL_TEXT_2_DIM,
    TEXT_DIM,
    TINY_SD2_UNET_CONFIG,
    TINY_SDXL_UNET_CONFIG,
    TINY_SDXL_VAE_CONFIG,
    TINY_SEED,
    TINY_UNET_CONFIG,
    TINY_VAE_CONFIG,
    tiny_text_kwargs,
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


def build_tiny_tokenizer(**kwargs) -> CLIPTokenizer:
    """The tiny tokenizer, loaded from vocab files it writes to a temporary folder (kwargs: e.g.
    SDXL's second tokenizer pads with `!`)."""
    with tempfile.TemporaryDirectory(prefix="vidinv-tokenizer-") as folder:
        write_tiny_tokenizer_files(folder)
        return CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_TOKENS, **kwargs)


def tiny_text_config(hidden: int = TEXT_DIM, **kwargs) -> CLIPTextConfig:
    """The config of a 2-layer CLIP text tower of width `hidden` over the tiny vocabulary (kwargs:
    hidden_act, projection_dim, ...)."""
    return CLIPTextConfig(**tiny_text_kwargs(hidden, **kwargs))


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
