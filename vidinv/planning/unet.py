"""The planner of UNet models (SD 1.x/2.x, SDXL, ControlNet): weights counted on modules built on
fake tensors from the components' configs; activation peaks those of one chunked UNet call and one
VAE chunk run on fake tensors (`vidinv.planning.memory`); the edit method's own widest moment and
what it keeps beside the record (TokenFlow's keyframe pass, FateZero's store) as it predicts them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from vidinv.config import Config, as_list
from vidinv.errors import VidinvError
from vidinv.inversion.costs import Costs
from vidinv.planning.budget import Plan, build_plan
from vidinv.planning.calls import LATENT_CHANNELS, edit_method_class, frame_calls
from vidinv.planning.memory import default_dtype, param_bytes
from vidinv.planning.shapes import clip_shape, read_folder_config


def _folder_configs(folder: Path) -> dict:
    """The component configs of a diffusers folder (SDXL: text_encoder_2's too)."""
    names = ["unet", "vae", "text_encoder"] + ["text_encoder_2"] * (folder / "text_encoder_2" / "config.json").is_file()
    return {name: read_folder_config(folder, f"{name}/config.json") for name in names}


def component_configs(config: Config) -> dict:
    """unet / vae / text_encoder configs: the tiny model's, or a diffusers folder's config.json files
    (model.pretrained, or model.single_file_config for a single-file checkpoint; a hub id's from
    the hub cache or fetched)."""
    from vidinv.models.hub import hub_config_folder
    from vidinv.models.paths import SINGLE_FILE_SUFFIXES, looks_like_path
    from vidinv.models.tiny import TINY_BUILDERS, TINY_UNET_CONFIG, TINY_VAE_CONFIG, tiny_text_config

    m = config.model
    if m.pretrained == "tiny":
        return {"unet": TINY_UNET_CONFIG, "vae": TINY_VAE_CONFIG, "text_encoder": tiny_text_config().to_dict()}
    if m.pretrained in TINY_BUILDERS:  # tiny-sd2, tiny-sdxl: the configs of the built components
        parts = TINY_BUILDERS[m.pretrained]()
        names = [n for n in ("unet", "vae", "text_encoder", "text_encoder_2") if parts.get(n) is not None]
        return {
            n: dict(parts[n].config) if isinstance(parts[n].config, dict) else parts[n].config.to_dict() for n in names
        }
    source = os.path.expanduser(m.single_file_config or m.pretrained)
    folder = Path(source)
    if not folder.exists() and not source.endswith(SINGLE_FILE_SUFFIXES) and not looks_like_path(source):
        folder = hub_config_folder(source)  # a hub id: its config files, from the cache or fetched
    if not folder.is_dir():
        raise VidinvError(
            f"plan: {folder} is not a local diffusers folder (plan reads the component configs offline;"
            " save the model with Models.save_pretrained or point model.single_file_config at its folder)"
        )
    return _folder_configs(folder)


def build_fake_components(configs: dict, dtype: torch.dtype) -> dict:
    """UNet, VAE and text encoder of these configs on fake tensors (call inside `fake_mode()`)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    text_configs = {
        name: CLIPTextConfig(**{k: v for k, v in configs[name].items() if not k.startswith("_")})
        for name in ("text_encoder", "text_encoder_2")
        if name in configs
    }
    with default_dtype(dtype):  # fake parameters cannot be cast after construction
        built = {
            "unet": UNet2DConditionModel.from_config(configs["unet"]),
            "vae": AutoencoderKL.from_config(configs["vae"]),
            "text_encoder": CLIPTextModel(text_configs["text_encoder"]),
        }
        if "text_encoder_2" in text_configs:  # SDXL
            built["text_encoder_2"] = CLIPTextModelWithProjection(text_configs["text_encoder_2"])
    return {name: module.eval().requires_grad_(False) for name, module in built.items()}


def fake_text_conditioning(configs: dict, n_rows: int, dtype: torch.dtype):
    """Empty text conditioning of `n_rows` prompt rows shaped for the UNet of `configs` (SDXL: with its
    added conditioning, the pooled embedding of text_encoder_2 and the six size ids)."""
    from vidinv.models.text import TextConditioning

    emb = torch.empty(n_rows, 77, configs["unet"].get("cross_attention_dim", 768), dtype=dtype)
    if configs["unet"].get("addition_embed_type") != "text_time":
        return TextConditioning(emb)
    pooled = configs.get("text_encoder_2", {}).get("projection_dim", 1280)
    added = {"text_embeds": torch.empty(n_rows, pooled, dtype=dtype), "time_ids": torch.empty(n_rows, 6, dtype=dtype)}
    return TextConditioning(emb, added)


def fake_controlnet(source: str, unet) -> torch.nn.Module:
    """A ControlNet of `source`'s config (a folder's config.json), else of the UNet's encoder
    architecture (diffusers' `from_unet`, what the family's ControlNets share); call in fake mode."""
    from diffusers import ControlNetModel

    config = Path(os.path.expanduser(source)) / "config.json"
    if config.is_file():
        return ControlNetModel.from_config(json.loads(config.read_text()))
    return ControlNetModel.from_unet(unet)


def _unet_rows(costs: Costs, command: str) -> int:
    """Rows of the widest UNet call of the run (the edit's pair, or the inversion's rows)."""
    return costs.source_rows + (costs.edit_rows if command == "edit" else 0)


def configs_family(configs: dict):
    """The model family of these component configs (SDXL when they have text_encoder_2)."""
    from vidinv.models.family import family_from_configs

    pipeline = "StableDiffusionXLPipeline" if "text_encoder_2" in configs else "StableDiffusionPipeline"
    return family_from_configs("plan", {"_class_name": pipeline}, configs["unet"], {}, configs["vae"])


def plan_unet(config: Config, command: str) -> Plan:
    """The prediction for `vidinv COMMAND` on a UNet model (seconds: fake tensors only)."""
    from vidinv.attention import run_unet
    from vidinv.attention.inflate import install_from_config
    from vidinv.models import resolve_device, resolve_dtype
    from vidinv.planning.memory import fake_mode, peak_bytes

    rt, costs = config.runtime, Costs(config)
    device = resolve_device(config.model.device, present=False)  # shapes only
    dtype = resolve_dtype(config.model.dtype, device)
    frames, height, width = clip_shape(config)
    latent_hw = (height // 8, width // 8)
    configs = component_configs(config)
    if config.model.lora is not None:  # a LoRA for another family: one line before loading
        from vidinv.models.lora import check_lora_files

        check_lora_files(config.model, configs_family(configs))
    latent_bytes = frames * LATENT_CHANNELS * latent_hw[0] * latent_hw[1] * 4  # fp32 in the loops
    with fake_mode():
        parts = build_fake_components(configs, dtype)
        unet, vae = parts["unet"], parts["vae"]
        install_from_config(unet, config.model)
        sim = frames if not rt.unet_chunk else min(frames, 2 * rt.unet_chunk)  # one chunk and its anchors
        batch = torch.empty(_unet_rows(costs, command), sim, LATENT_CHANNELS, *latent_hw, dtype=dtype)
        text = fake_text_conditioning(configs, batch.shape[0], dtype)
        unet_act = peak_bytes(lambda: run_unet(unet, batch, torch.tensor(999), text, chunk=rt.unet_chunk))
        method = edit_method_class(config) if command == "edit" else None
        if method is not None:
            unet_act = max(unet_act, method.predicted_activation_bytes(config, unet, text, frames, latent_hw, dtype))
        from vidinv.models.vae import set_vae_tiling

        set_vae_tiling(vae, rt.vae_tile_size if rt.vae_tiling else None)
        chunk = min(frames, rt.vae_chunk or frames)
        pixels = torch.empty(chunk, 3, height, width, dtype=dtype)
        latents = torch.empty(chunk, LATENT_CHANNELS, *latent_hw, dtype=dtype)
        vae_act = max(peak_bytes(lambda: vae.encode(pixels)), peak_bytes(lambda: vae.decode(latents)))
        weights = {name: param_bytes(module) for name, module in parts.items()}
        if config.model.controlnet is not None:
            with default_dtype(dtype):
                nets = [fake_controlnet(source, unet) for source in as_list(config.model.controlnet)]
            weights["controlnet"] = sum(param_bytes(net) for net in nets)
        if rt.offload == "sequential":
            largest_layer = max(param_bytes(m) for p in parts.values() for m in p.modules() if not list(m.children()))
    # outside the fake mode: the store's step table is real
    store = method and method.predicted_store_bytes(config, unet, configs_family(configs), frames, latent_hw)
    in_memory = store is not None and method.store_in_memory(config, store)
    # model offload: one group at a time on the device, the UNet with its ControlNets (vidinv.models.offload)
    groups = {name: size for name, size in weights.items() if name != "controlnet"}
    groups["unet"] += weights.get("controlnet", 0)
    on_device = {"none": sum(groups.values()), "model": max(groups.values())}
    device_weights = largest_layer if rt.offload == "sequential" else on_device[rt.offload]
    from vidinv.inversion.record import record_bytes

    record = record_bytes(costs.sampler.tensor_steps(costs.steps), latent_bytes)
    return build_plan(
        config, command, device, (frames, height, width), frame_calls(config, command, frames, latent_hw, in_memory),
        weights, device_weights, (unet_act, vae_act), latent_bytes, record,
        store=store, host_store=store if in_memory else 0,
    )  # fmt: skip
