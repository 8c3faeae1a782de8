"""Test utility: a diffusers SD 1.x-shaped model as one state dict in the original LDM (CompVis) layout.

The inverse of diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint` and
`convert_ldm_clip_checkpoint`, for any block counts: `model.diffusion_model.*` (UNet),
`first_stage_model.*` (VAE) and `cond_stage_model.transformer.*` (CLIP text encoder).
"""

from __future__ import annotations

import re

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's added (text_time) conditioning
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
VAE_TOP = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

BLOCK = re.compile(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)")
MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)")


def _rename_head(rest: str, names: dict[str, str]) -> str:
    """Rename the module path at the start of `rest` (`conv1.weight` -> `in_layers.2.weight`)."""
    for old, new in names.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def _unet_key(key: str, per_block: int, up_with_attention: set[int]) -> str:
    """One diffusers UNet key -> its LDM key (without the prefix)."""
    head, _, param = key.rpartition(".")
    if head in UNET_TOP:
        return f"{UNET_TOP[head]}.{param}"
    if match := MID.fullmatch(key):
        kind, index, rest = match.group(1), int(match.group(2)), match.group(3)
        if kind == "resnets":
            return f"middle_block.{2 * index}.{_rename_head(rest, UNET_RESNET)}"
        return f"middle_block.{2 * index + 1}.{rest}"
    side, block, kind, layer, rest = BLOCK.fullmatch(key).groups()
    block, layer = int(block), int(layer)
    if side == "down":
        first = 1 + block * (per_block + 1)
        if kind == "downsamplers":
            return f"input_blocks.{first + per_block}.0.op.{rest.removeprefix('conv.')}"
        where = f"input_blocks.{first + layer}"
    else:
        first = block * (per_block + 1)
        if kind == "upsamplers":
            return f"output_blocks.{first + per_block}.{2 if block in up_with_attention else 1}.{rest}"
        where = f"output_blocks.{first + layer}"
    if kind == "resnets":
        return f"{where}.0.{_rename_head(rest, UNET_RESNET)}"
    return f"{where}.1.{rest}"


def unet_to_ldm(state_dict: dict, layers_per_block: int) -> dict:
    """A diffusers UNet2DConditionModel state dict -> LDM keys under `model.diffusion_model.`."""
    up_with_attention = {int(k.split(".")[1]) for k in state_dict if k.startswith("up_blocks.") and ".attentions." in k}
    return {UNET_PREFIX + _unet_key(k, layers_per_block, up_with_attention): v for k, v in state_dict.items()}


def _vae_key(key: str, num_up: int) -> str:
    """One diffusers AutoencoderKL key -> its LDM key (without the prefix)."""
    head, _, param = key.rpartition(".")
    if head in VAE_TOP:
        return f"{VAE_TOP[head]}.{param}"
    coder, _, inner = key.partition(".")
    if match := MID.fullmatch(inner):
        kind, index, rest = match.groups()
        if kind == "resnets":
            return f"{coder}.mid.block_{int(index) + 1}.{_rename_head(rest, VAE_RESNET)}"
        return f"{coder}.mid.attn_1.{_rename_head(rest, VAE_ATTENTION)}"
    if match := BLOCK.fullmatch(inner):
        side, block, kind, layer, rest = match.groups()
        block = int(block) if side == "down" else num_up - 1 - int(block)
        if kind in ("downsamplers", "upsamplers"):
            return f"{coder}.{side}.{block}.{side}sample.{rest}"
        return f"{coder}.{side}.{block}.block.{layer}.{_rename_head(rest, VAE_RESNET)}"
    return key


def _as_conv(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """LDM's VAE attention uses 1x1 convolutions where diffusers has linear layers."""
    if ".attn_1." in key and tensor.ndim == 2:
        return tensor[:, :, None, None]
    return tensor


def vae_to_ldm(state_dict: dict, num_up_blocks: int) -> dict:
    """A diffusers AutoencoderKL state dict -> LDM keys under `first_stage_model.`."""
    renamed = {VAE_PREFIX + _vae_key(k, num_up_blocks): v for k, v in state_dict.items()}
    return {k: _as_conv(k, v) for k, v in renamed.items()}


def clip_to_ldm(state_dict: dict) -> dict:
    """A transformers CLIPTextModel state dict -> `cond_stage_model.transformer.text_model.*` keys.

    transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); LDM files always have it.
    """
    return {CLIP_PREFIX + with_text_model(k): v for k, v in state_dict.items()}


def with_text_model(key: str) -> str:
    """`embeddings.x` -> `text_model.embeddings.x` (keys that have the level already are kept)."""
    return key if key.startswith("text_model.") else "text_model." + key


def models_to_ldm(unet, vae, text_encoder) -> dict:
    """The three modules as one LDM-layout state dict (contiguous tensors, ready for safetensors)."""
    parts = (
        unet_to_ldm(unet.state_dict(), unet.config.layers_per_block),
        vae_to_ldm(vae.state_dict(), len(vae.config.up_block_types)),
        clip_to_ldm(text_encoder.state_dict()),
    )
    return {k: v.detach().contiguous() for part in parts for k, v in part.items()}


OPEN_CLIP_PREFIX = "cond_stage_model.model."  # SD 2.x's OpenCLIP text tower
OPEN_CLIP_TOP = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def open_clip_to_ldm(state_dict: dict, prefix: str = OPEN_CLIP_PREFIX) -> dict:
    """A transformers CLIPTextModel(WithProjection) state dict -> OpenCLIP keys under `prefix` (the
    inverse of diffusers' `convert_open_clip_checkpoint`): q/k/v joined into `in_proj_*`, the
    projection transposed into `text_projection`."""
    out, qkv = {}, {}
    for key, value in state_dict.items():
        key = key if key == "text_projection.weight" else with_text_model(key)
        if key in OPEN_CLIP_TOP:
            out[prefix + OPEN_CLIP_TOP[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif match := re.match(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            layer, part, kind = match.groups()
            qkv.setdefault((layer, kind), {})[part] = value
        else:
            rest = re.sub(r"^text_model\.encoder\.layers\.(\d+)\.", r"transformer.resblocks.\1.", key)
            rest = rest.replace(".self_attn.", ".attn.")
            for new, old in OPEN_CLIP_LAYER.items():
                rest = rest.replace(f".{new}.", f".{old}.")
            out[prefix + rest] = value
    for (layer, kind), parts in qkv.items():
        joined = torch.cat([parts["q"], parts["k"], parts["v"]])
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = joined
    return out


SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."  # CLIP ViT-L, transformers layout
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."  # OpenCLIP ViT-bigG


def models_to_ldm_file_dict(models) -> dict:
    """An SD 1.x / 2.x / SDXL `vidinv.models.Models` as one original-layout state dict: the UNet and
    VAE as LDM keys; the text tower(s) as that family's checkpoints hold them (SD 1.x CLIP, SD 2.x
    OpenCLIP, SDXL both under `conditioner.embedders`)."""
    unet, vae = models.unet, models.vae
    parts = [
        unet_to_ldm(unet.state_dict(), unet.config.layers_per_block),
        vae_to_ldm(vae.state_dict(), len(vae.config.up_block_types)),
    ]
    text = models.text_encoder.state_dict()
    if models.text_encoder_2 is not None:
        parts.append({SDXL_CLIP_PREFIX + with_text_model(k): v for k, v in text.items()})
        parts.append(open_clip_to_ldm(models.text_encoder_2.state_dict(), SDXL_OPEN_CLIP_PREFIX))
    elif models.family is not None and models.family.name == "sd2":
        parts.append(open_clip_to_ldm(text))
    else:
        parts.append(clip_to_ldm(text))
    return {k: v.detach().contiguous() for part in parts for k, v in part.items()}


CONTROLNET_PREFIX = "control_model."
CONTROLNET_HEADS = [  # diffusers ControlNet heads -> LDM (ControlLDM) modules, beyond the UNet encoder's
    (re.compile(r"controlnet_down_blocks\.(\d+)"), lambda m, n: f"zero_convs.{m[1]}.0"),
    (re.compile(r"controlnet_mid_block"), lambda m, n: "middle_block_out.0"),
    (re.compile(r"controlnet_cond_embedding\.conv_in"), lambda m, n: "input_hint_block.0"),
    (re.compile(r"controlnet_cond_embedding\.blocks\.(\d+)"), lambda m, n: f"input_hint_block.{2 * (int(m[1]) + 1)}"),
    (re.compile(r"controlnet_cond_embedding\.conv_out"), lambda m, n: f"input_hint_block.{2 * (n + 1)}"),
]


def controlnet_to_ldm(state_dict: dict, layers_per_block: int) -> dict:
    """A diffusers ControlNetModel state dict -> ControlLDM keys under `control_model.` (the inverse of
    diffusers' `convert_controlnet_checkpoint`): its UNet encoder as `unet_to_ldm` names it, the zero
    convolutions, the middle block's output and the hint (conditioning embedding) convolutions."""
    hint_blocks = len({k.split(".")[2] for k in state_dict if k.startswith("controlnet_cond_embedding.blocks.")})

    def ldm_key(key: str) -> str:
        head, _, param = key.rpartition(".")
        for pattern, name in CONTROLNET_HEADS:
            if match := pattern.fullmatch(head):
                return f"{name(match, hint_blocks)}.{param}"
        return _unet_key(key, layers_per_block, set())

    return {CONTROLNET_PREFIX + ldm_key(k): v for k, v in state_dict.items()}
