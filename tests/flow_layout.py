"""Test utility: SD3 / Flux transformers as state dicts in their original layouts.

The inverse of diffusers' `convert_sd3_transformer_checkpoint_to_diffusers` (Stability's MMDiT
layout, `joint_blocks.*`, under `model.diffusion_model.` as in sd3_medium.safetensors) and
`convert_flux_transformer_checkpoint_to_diffusers` (BFL's layout, `double_blocks.*` /
`single_blocks.*`, bare keys as in flux1-dev.safetensors), for any block counts and widths: renamed
keys, q / k / v (and Flux's single-block MLP input) fused into one tensor, and the adaLN
projections whose (scale, shift) halves diffusers swaps put back as (shift, scale).
"""

from __future__ import annotations

import re

import torch

SD3_PREFIX = "model.diffusion_model."
P = r"\.(weight|bias)"  # a parameter suffix, kept as \1 or \2


def _embedders(names: dict[str, str], layers: tuple[str, str]) -> list:
    """Rules of the time / text (/ guidance) embedders' two linear layers: diffusers'
    `time_text_embed.{embedder}.linear_1/2` -> `{original}.{layers[0]/[1]}`."""
    return [
        (rf"time_text_embed\.{embedder}\.linear_{i + 1}{P}", rf"{original}.{layer}.\1", None)
        for embedder, original in names.items()
        for i, layer in enumerate(layers)
    ]


def _qkv(pattern: str, target: str) -> list:
    """Rules of the q, k, v tensors fused into `target` (slots 0, 1, 2); `{}` in `pattern` is q / k / v."""
    return [(pattern.format(x), target, slot) for slot, x in enumerate("qkv")]


# (diffusers key pattern, original key template, slot in a fused tensor or None)
SD3_RULES = [
    (r"pos_embed\.pos_embed", "pos_embed", None),
    (rf"pos_embed\.proj{P}", r"x_embedder.proj.\1", None),
    *_embedders({"timestep_embedder": "t_embedder.mlp", "text_embedder": "y_embedder.mlp"}, ("0", "2")),
    (rf"context_embedder{P}", r"context_embedder.\1", None),
    *_qkv(rf"transformer_blocks\.(\d+)\.attn\.to_{{}}{P}", r"joint_blocks.\1.x_block.attn.qkv.\2"),
    *_qkv(rf"transformer_blocks\.(\d+)\.attn\.add_{{}}_proj{P}", r"joint_blocks.\1.context_block.attn.qkv.\2"),
    *_qkv(rf"transformer_blocks\.(\d+)\.attn2\.to_{{}}{P}", r"joint_blocks.\1.x_block.attn2.qkv.\2"),
    (rf"transformer_blocks\.(\d+)\.attn\.norm_([qk]){P}", r"joint_blocks.\1.x_block.attn.ln_\2.\3", None),
    (rf"transformer_blocks\.(\d+)\.attn\.norm_added_([qk]){P}", r"joint_blocks.\1.context_block.attn.ln_\2.\3", None),
    (rf"transformer_blocks\.(\d+)\.attn2\.norm_([qk]){P}", r"joint_blocks.\1.x_block.attn2.ln_\2.\3", None),
    (rf"transformer_blocks\.(\d+)\.attn\.to_out\.0{P}", r"joint_blocks.\1.x_block.attn.proj.\2", None),
    (rf"transformer_blocks\.(\d+)\.attn\.to_add_out{P}", r"joint_blocks.\1.context_block.attn.proj.\2", None),
    (rf"transformer_blocks\.(\d+)\.attn2\.to_out\.0{P}", r"joint_blocks.\1.x_block.attn2.proj.\2", None),
    (rf"transformer_blocks\.(\d+)\.norm1\.linear{P}", r"joint_blocks.\1.x_block.adaLN_modulation.1.\2", None),
    (rf"transformer_blocks\.(\d+)\.norm1_context\.linear{P}", r"joint_blocks.\1.context_block.adaLN_modulation.1.\2", None),
    (rf"transformer_blocks\.(\d+)\.ff\.net\.0\.proj{P}", r"joint_blocks.\1.x_block.mlp.fc1.\2", None),
    (rf"transformer_blocks\.(\d+)\.ff\.net\.2{P}", r"joint_blocks.\1.x_block.mlp.fc2.\2", None),
    (rf"transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj{P}", r"joint_blocks.\1.context_block.mlp.fc1.\2", None),
    (rf"transformer_blocks\.(\d+)\.ff_context\.net\.2{P}", r"joint_blocks.\1.context_block.mlp.fc2.\2", None),
    (rf"proj_out{P}", r"final_layer.linear.\1", None),
    (rf"norm_out\.linear{P}", r"final_layer.adaLN_modulation.1.\1", None),
]  # fmt: skip

FLUX_RULES = [
    *_embedders(
        {"timestep_embedder": "time_in", "text_embedder": "vector_in", "guidance_embedder": "guidance_in"},
        ("in_layer", "out_layer"),
    ),
    (rf"context_embedder{P}", r"txt_in.\1", None),
    (rf"x_embedder{P}", r"img_in.\1", None),
    (rf"transformer_blocks\.(\d+)\.norm1\.linear{P}", r"double_blocks.\1.img_mod.lin.\2", None),
    (rf"transformer_blocks\.(\d+)\.norm1_context\.linear{P}", r"double_blocks.\1.txt_mod.lin.\2", None),
    *_qkv(rf"transformer_blocks\.(\d+)\.attn\.to_{{}}{P}", r"double_blocks.\1.img_attn.qkv.\2"),
    *_qkv(rf"transformer_blocks\.(\d+)\.attn\.add_{{}}_proj{P}", r"double_blocks.\1.txt_attn.qkv.\2"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_q\.weight", r"double_blocks.\1.img_attn.norm.query_norm.scale", None),
    (r"transformer_blocks\.(\d+)\.attn\.norm_k\.weight", r"double_blocks.\1.img_attn.norm.key_norm.scale", None),
    (r"transformer_blocks\.(\d+)\.attn\.norm_added_q\.weight", r"double_blocks.\1.txt_attn.norm.query_norm.scale", None),
    (r"transformer_blocks\.(\d+)\.attn\.norm_added_k\.weight", r"double_blocks.\1.txt_attn.norm.key_norm.scale", None),
    (rf"transformer_blocks\.(\d+)\.ff\.net\.0\.proj{P}", r"double_blocks.\1.img_mlp.0.\2", None),
    (rf"transformer_blocks\.(\d+)\.ff\.net\.2{P}", r"double_blocks.\1.img_mlp.2.\2", None),
    (rf"transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj{P}", r"double_blocks.\1.txt_mlp.0.\2", None),
    (rf"transformer_blocks\.(\d+)\.ff_context\.net\.2{P}", r"double_blocks.\1.txt_mlp.2.\2", None),
    (rf"transformer_blocks\.(\d+)\.attn\.to_out\.0{P}", r"double_blocks.\1.img_attn.proj.\2", None),
    (rf"transformer_blocks\.(\d+)\.attn\.to_add_out{P}", r"double_blocks.\1.txt_attn.proj.\2", None),
    (rf"single_transformer_blocks\.(\d+)\.norm\.linear{P}", r"single_blocks.\1.modulation.lin.\2", None),
    *_qkv(rf"single_transformer_blocks\.(\d+)\.attn\.to_{{}}{P}", r"single_blocks.\1.linear1.\2"),
    (rf"single_transformer_blocks\.(\d+)\.proj_mlp{P}", r"single_blocks.\1.linear1.\2", 3),
    (r"single_transformer_blocks\.(\d+)\.attn\.norm_q\.weight", r"single_blocks.\1.norm.query_norm.scale", None),
    (r"single_transformer_blocks\.(\d+)\.attn\.norm_k\.weight", r"single_blocks.\1.norm.key_norm.scale", None),
    (rf"single_transformer_blocks\.(\d+)\.proj_out{P}", r"single_blocks.\1.linear2.\2", None),
    (rf"proj_out{P}", r"final_layer.linear.\1", None),
    (rf"norm_out\.linear{P}", r"final_layer.adaLN_modulation.1.\1", None),
]  # fmt: skip


def _target(key: str, rules) -> tuple[str, int | None]:
    for pattern, template, slot in rules:
        if match := re.fullmatch(pattern, key):
            return match.expand(template), slot
    raise KeyError(f"no original-layout rule for {key}")


def swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    """(a, b) -> (b, a) along dim 0: diffusers' `swap_scale_shift` and its own inverse."""
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first])


def to_original(state_dict: dict, rules, swapped: set[str]) -> dict:
    """A diffusers state dict -> original keys (every key must match a rule); fused slots are
    concatenated in slot order, the adaLN projections in `swapped` get their halves swapped."""
    out, fused = {}, {}
    for key, value in state_dict.items():
        target, slot = _target(key, rules)
        if slot is None:
            out[target] = value
        else:
            fused.setdefault(target, {})[slot] = value
    out |= {target: torch.cat([parts[i] for i in sorted(parts)]) for target, parts in fused.items()}
    return {k: (swap_halves(v) if k.rsplit(".", 1)[0] in swapped else v) for k, v in out.items()}


def sd3_to_original(transformer, prefix: str = SD3_PREFIX) -> dict:
    """An SD3Transformer2DModel as Stability's MMDiT keys (under `prefix`). The last joint block's
    context stream is pre-only: its adaLN (like the final layer's) has diffusers' swapped halves."""
    last = transformer.config.num_layers - 1
    swapped = {"final_layer.adaLN_modulation.1", f"joint_blocks.{last}.context_block.adaLN_modulation.1"}
    converted = to_original(transformer.state_dict(), SD3_RULES, swapped)
    return {prefix + k: v.detach().contiguous() for k, v in converted.items()}


def flux_to_original(transformer) -> dict:
    """A FluxTransformer2DModel as BFL's keys (flux1-dev.safetensors: transformer only, no prefix)."""
    converted = to_original(transformer.state_dict(), FLUX_RULES, {"final_layer.adaLN_modulation.1"})
    return {k: v.detach().contiguous() for k, v in converted.items()}
