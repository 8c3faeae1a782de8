"""`vidinv plan` for flow transformers (SD3, Flux, Wan): the same prediction as for UNets
(`vidinv.planning.unet`), from the pipeline's component configs on fake tensors.

Frame-calls: the inversion and PnP formulas of `vidinv.planning.calls` (Flux with one row per prompt: its
guidance is embedded, no CFG rows), FlowEdit's own (`FlowEdit.predicted_frame_calls`, no inversion).
Activations: one chunk of transformer frame-calls with the family's text tokens (SD3: 77 CLIP + the
T5 sequence; Flux, Wan: the T5 sequence) and one VAE chunk; weights: every module of the pipeline.
Wan, a native video model, is counted in latent frames (1 + (frames - 1) / 4; its transformer sees
them all at once, so `runtime.unet_chunk` does not apply) and a frame count its causal VAE cannot
take is refused here, before anything loads. A clip longer than one temporal window
(`runtime.window`, `vidinv.attention.windows`) is planned window by window: frame-calls count every
window's latent frames (overlaps twice), the transformer's activations are one window's beside the
clip's blended output, and a clip that is not whole windows is refused here too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import torch

from vidinv.config import Config
from vidinv.errors import VidinvError
from vidinv.models.families import Family
from vidinv.planning.budget import Plan, build_plan
from vidinv.planning.calls import frame_calls
from vidinv.planning.memory import default_dtype, param_bytes
from vidinv.planning.shapes import clip_shape, read_folder_config

FLOW_MODULES = ("transformer", "transformer_2", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
DIFFUSERS_MODULES = ("transformer", "transformer_2", "vae")  # the others are transformers' (text encoders)


def flow_configs(config: Config, family: Family) -> dict:
    """{component: (class name, config dict)} of the flow source's modules (tiny: the built ones; a
    single file: those of its single_file_config, whose transformer config the file's follows)."""
    from vidinv.models.hub import hub_config_folder
    from vidinv.models.paths import SINGLE_FILE_SUFFIXES, looks_like_path

    source = config.model.pretrained
    if source.endswith(SINGLE_FILE_SUFFIXES):
        if not config.model.single_file_config:
            raise VidinvError(f"plan: model.single_file_config must name the diffusers folder or hub id of {source}")
        source = config.model.single_file_config
    if source in family.tiny_names:
        from vidinv.models.tiny_flow import TINY_FLOW_BUILDERS

        parts = TINY_FLOW_BUILDERS[source]()
        return {
            name: (
                type(parts[name]).__name__,
                dict(parts[name].config) if name in DIFFUSERS_MODULES else parts[name].config.to_dict(),
            )
            for name in FLOW_MODULES
            if parts.get(name) is not None
        }
    folder = Path(source).expanduser()
    if not folder.exists() and not looks_like_path(source):
        folder = hub_config_folder(source)
    index = read_folder_config(folder, "model_index.json")
    wanted = [n for n in FLOW_MODULES if isinstance(index.get(n), list) and index[n][1] is not None]
    if not config.model.t5:
        wanted = [n for n in wanted if n != "text_encoder_3"]
    return {name: (index[name][1], read_folder_config(folder, f"{name}/config.json")) for name in wanted}


def build_fake_flow_modules(configs: dict, dtype: torch.dtype, family: Family) -> dict:
    """The modules of `configs` on fake tensors, each in the dtype it is loaded in (call inside
    `fake_mode()`)."""
    import diffusers
    import transformers

    from vidinv.models.flow import component_dtype
    from vidinv.models.loading import cast_module

    built = {}
    for name, (cls_name, cfg) in configs.items():
        with default_dtype(component_dtype(family, name, dtype)):
            if name in DIFFUSERS_MODULES:
                built[name] = getattr(diffusers, cls_name).from_config(cfg)
            else:
                fields = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "model_type"}
                text_config = transformers.AutoConfig.for_model(cfg["model_type"], **fields)
                built[name] = getattr(transformers, cls_name)(text_config)
    return {
        name: cast_module(m, component_dtype(family, name, dtype)).eval().requires_grad_(False)
        for name, m in built.items()
    }


def fake_condition(family: Family, rows: int, tokens: int, transformer, dtype: torch.dtype):
    """Empty prompt conditions of `rows` rows shaped for the transformer (the family's adapter's)."""
    return family.adapter.empty(rows, tokens, transformer.config, dtype)


def flow_calls(config: Config, command: str, family: Family, frames: int, latent_hw: tuple[int, int]) -> dict:
    """Transformer frame-calls per stage (module docstring)."""
    if family.guidance_embedded:  # one row per prompt
        config = dataclasses.replace(
            config,
            inversion=dataclasses.replace(config.inversion, guidance_scale=1.0),
            edit=dataclasses.replace(config.edit, guidance_scale=1.0),
        )
    return frame_calls(config, command, frames, latent_hw, family=family)


def check_size(family: Family, transformer_config: dict, factor: int, height: int, width: int) -> None:
    """A one-line error when the frame size is not a whole number of the transformer's tokens
    (`Family.patch_pixels`: SD3's patch_size, Flux's 2x2 packing, Wan's spatial patch), or has more
    tokens a side than its positional embedding holds (SD3's `pos_embed_max_size`)."""
    unit = family.patch_pixels(transformer_config, factor)
    limit = transformer_config.get("pos_embed_max_size")
    for key, value in (("height", height), ("width", width)):
        if value % unit:
            below, above = max(unit, value // unit * unit), value // unit * unit + unit
            raise VidinvError(
                f"video.{key}: {value} is not a multiple of {unit} (the {family.name} transformer's tokens are"
                f" {unit}x{unit} pixels); use {below} or {above}"
            )
        if limit and value // unit > limit:
            raise VidinvError(
                f"video.{key}: {value} is {value // unit} tokens of {unit} px, more than the {family.name} transformer's"
                f" positional embedding holds ({limit} a side); use a multiple of {unit} up to {limit * unit}"
            )


def check_temporal_patch(
    transformer_config: dict, frames: int, latent_frames: int, per_latent: int, group: int = 1
) -> None:
    """A one-line error when the latent frames are not whole temporal patches of the transformer
    (`patch_size_t`: CogVideoX 1.5's 2, whose pipeline pads the clip instead), naming the nearest counts
    that are also whole VAE groups (`vidinv.models.clip_vae.latent_frame_group`), or saying that none is."""
    patch = transformer_config.get("patch_size_t") or 1
    if latent_frames % patch == 0:
        return
    fits = [n for n in range(1, latent_frames + 2 * patch * group + 1) if n % patch == 0 and (n - 1) % group == 0]
    if not fits:
        raise VidinvError(
            f"video.num_frames: the transformer's temporal patch ({patch} latent frames) takes an even count of"
            f" latent frames and the VAE an odd one (it decodes them in groups of {group} after the first): no clip"
            " fits both without the padding its pipeline adds, which vidinv does not do"
        )
    below = [n for n in fits if n < latent_frames][-1:]
    above = [n for n in fits if n > latent_frames][:1]
    counts = [1 + (n - 1) * per_latent for n in below + above]
    raise VidinvError(
        f"video.num_frames: {frames} frames are {latent_frames} latent frames, not a multiple of the transformer's"
        f" temporal patch ({patch} latent frames); use {' or '.join(map(str, counts))}"
    )


def check_methods(config: Config, command: str, family: Family) -> None:
    """One-line errors before anything loads: an edit method a native video model cannot take, and on
    a DDPM transformer (CogVideoX) an inversion method of the flow models."""
    from vidinv.editing.methods import check_video_method, get_edit_method
    from vidinv.inversion.costs import inversion_method
    from vidinv.inversion.flow import record_sampler

    if command == "edit" and family.video:
        check_video_method(get_edit_method(config.edit.method), family)
    if not family.flow:
        record_sampler(inversion_method(config), None)  # a DDPM grid: the scheduler is no flow-matching one


def vae_activations(vae, chunk: int, channels: int, size: tuple[int, int], dtype: torch.dtype, frames: int = 1) -> int:
    """Peak bytes of one VAE chunk's encode or decode (Wan: one causal group of 4 frames, its caches;
    a whole-clip video VAE, LTX-Video's: the clip of `frames` frames in one call)."""
    from vidinv.models.causal_vae import (
        CausalDecoder,
        CausalEncoder,
        is_causal_video_vae,
        latent_frame_count,
        temporal_factor,
    )
    from vidinv.models.clip_vae import ClipDecoder, ClipEncoder, is_clip_video_vae
    from vidinv.models.vae import spatial_factor
    from vidinv.planning.memory import peak_bytes

    latent_hw = tuple(n // spatial_factor(vae.config) for n in size)
    if is_clip_video_vae(vae):
        pixels = torch.empty(frames, 3, *size)
        latents = torch.empty(latent_frame_count(frames, temporal_factor(vae.config)), channels, *latent_hw)
        encoder = ClipEncoder(vae)
        return max(
            peak_bytes(lambda: (encoder.push(pixels), encoder.finish())),
            peak_bytes(lambda: ClipDecoder(vae).push(latents)),
        )
    if is_causal_video_vae(vae):  # the second group's peak: the caches of the first are alive
        pixels, latents = torch.empty(5, 3, *size), torch.empty(2, channels, *latent_hw)
        return max(
            peak_bytes(lambda: CausalEncoder(vae).push(pixels)),
            peak_bytes(lambda: CausalDecoder(vae).push(latents)),
        )
    pixels = torch.empty(chunk, 3, *size, dtype=dtype)
    latents = torch.empty(chunk, channels, *latent_hw, dtype=dtype)
    return max(peak_bytes(lambda: vae.encode(pixels)), peak_bytes(lambda: vae.decode(latents)))


def plan_flow(config: Config, command: str, family: Family) -> Plan:
    """The prediction for `vidinv COMMAND` on a flow model of `family` (its record; seconds: fake
    tensors only)."""
    from vidinv.attention.flow_runner import run_flow
    from vidinv.attention.inflate import install_from_config
    from vidinv.attention.windows import resolve_windows
    from vidinv.models import resolve_device, resolve_dtype
    from vidinv.models.causal_vae import check_frame_count, latent_frame_count, temporal_factor
    from vidinv.models.clip_vae import latent_frame_group
    from vidinv.models.vae import latent_channels, set_vae_tiling, spatial_factor
    from vidinv.planning.memory import fake_mode, peak_bytes

    rt = config.runtime
    device = resolve_device(config.model.device, present=False)  # shapes only
    dtype = resolve_dtype(config.model.dtype, device, family)
    frames, height, width = clip_shape(config)
    configs = flow_configs(config, family)
    vae_config = configs["vae"][1]
    factor, channels, per_latent = spatial_factor(vae_config), latent_channels(vae_config), temporal_factor(vae_config)
    group = latent_frame_group(family.vae)  # CogVideoX: latent frames decoded in pairs after the first
    check_frame_count(frames, per_latent * group)
    check_size(family, configs["transformer"][1], factor, height, width)
    check_methods(config, command, family)
    latent_frames = latent_frame_count(frames, per_latent)
    check_temporal_patch(configs["transformer"][1], frames, latent_frames, per_latent, group)
    video = family.video
    windows = resolve_windows(family, rt, per_latent, note=False)  # a video model's (runtime.window)
    if windows is not None:
        windows.check(latent_frames)  # whole windows, before anything loads
    called = latent_frames if windows is None else windows.frame_calls(latent_frames)  # overlaps twice
    latent_hw = (height // factor, width // factor)
    latent_bytes = latent_frames * channels * latent_hw[0] * latent_hw[1] * 4
    calls = flow_calls(config, command, family, called, latent_hw)
    if config.model.pretrained in family.tiny_names:
        from vidinv.models.tiny_flow import T5_TOKENS

        t5_tokens = T5_TOKENS
    else:
        t5_tokens = family.t5_tokens
    tokens = family.text_tokens(t5_tokens)  # SD3: CLIP's 77 tokens before T5's
    widest = 4 if command == "edit" else 2  # source and edit branches, each (uncond, cond)
    with fake_mode():
        parts = build_fake_flow_modules(configs, dtype, family)
        transformer, vae = parts["transformer"], parts["vae"]
        install_from_config(transformer, config.model)
        # one chunk and its anchors; a video model sees every latent frame at once, or one window at a
        # time beside the clip's blended output
        sim = latent_frames if (video or not rt.unet_chunk) else min(latent_frames, 2 * rt.unet_chunk)
        batch = torch.empty(widest, sim, channels, *latent_hw, dtype=dtype)
        cond = fake_condition(family, widest, tokens, transformer, dtype)
        models = SimpleNamespace(transformer=transformer, call=family.adapter.call, video=video, windows=windows)
        unet_act = peak_bytes(lambda: run_flow(models, batch, torch.tensor(500.0), cond, chunk=rt.unet_chunk))
        chunk = min(frames, rt.vae_chunk or frames)
        set_vae_tiling(vae, rt.vae_tile_size if rt.vae_tiling else None)  # as the editor sets it
        vae_act = vae_activations(vae, chunk, channels, (height, width), next(vae.parameters()).dtype, frames)
        weights = {name: param_bytes(module) for name, module in parts.items()}
        largest_layer = max(param_bytes(m) for p in parts.values() for m in p.modules() if not list(m.children()))
    on_device = {"none": sum(weights.values()), "model": max(weights.values()), "sequential": largest_layer}
    from vidinv.inversion.costs import inversion_method
    from vidinv.inversion.record import record_bytes
    from vidinv.registry import SAMPLERS

    sampler = SAMPLERS.get(inversion_method(config).sampler)  # ddpm_ef (CogVideoX): its noise maps too
    record_steps = sampler.tensor_steps(config.inversion.steps)
    record = 0 if calls.get("inversion", 0) == 0 else record_bytes(record_steps, latent_bytes)
    plan = build_plan(
        config, command, device, (frames, height, width), calls, weights, on_device[rt.offload],
        (unet_act, vae_act), latent_bytes, record, latent_frames=latent_frames if per_latent > 1 else None,
    )  # fmt: skip
    if windows is not None and windows.count(latent_frames) > 1:
        plan.windows = (windows.count(latent_frames), windows.size, windows.overlap)
    return plan
