"""Predict a run before it runs, from shapes alone (no weights, no frames decoded but one):
UNet frame-calls, peak device and host memory, the FateZero store; `check_fits` refuses a run
whose prediction exceeds the machine.

Weights are counted on modules built on fake tensors from the components' configs; activation peaks
are those of one chunked UNet call and one VAE chunk, run on fake tensors (`vidinv.fake_memory`).
Frame-call counts are one function per method (`inversion_calls`, `EDIT_CALLS`; a plug-in edit
method's own `EditMethod.predicted_frame_calls`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from vidinv.config import Config, as_list
from vidinv.errors import VidinvError

MB = 2**20
LATENT_CHANNELS = 4
WORKING_LATENTS = 6  # latent-sized tensors the samplers keep beside the record (z, eps, pair, ...)
# RSS of a `vidinv edit` process before its tensors: python, torch, diffusers, transformers, av, cv2
# (measured: 650-700 MB for the tiny model on 1 frame, scripts/bench_memory.py)
HOST_BASELINE_BYTES = 640 * MB


# ---------------------------------------------------------------- frame-calls (one function per method)
def rows(guidance: float, prompt: str, uncond_prompt: str = "") -> int:
    """UNet rows of one branch: 2 with classifier-free guidance (`vidinv.guidance.is_guided`), else 1."""
    from vidinv.guidance import is_guided

    return 2 if is_guided(prompt, guidance, uncond_prompt) else 1


def group_size(config: Config, latent_hw: tuple[int, int]) -> int:
    """UNet evaluations per step and row: MBDI's transform group, 1 for the other methods."""
    return _method(config).evaluations_per_step(latent_hw)


def _method(config: Config):
    from vidinv.inversion.methods import get_inversion_method

    return get_inversion_method(config.inversion.method)(config.inversion)


def source_rows(config: Config) -> int:
    """Rows of the record's prompt (the inversion and a reconstructed source branch)."""
    return rows(_method(config).guidance(), config.inversion.source_prompt)


def edit_rows(config: Config) -> int:
    ed = config.edit
    return rows(ed.guidance_scale, ed.target_prompt, ed.negative_prompt)


def start_step(config: Config) -> int:
    """The step edits and reconstructions start from (T_skip for an exact sampler)."""
    from vidinv.registry import SAMPLERS

    sampler = SAMPLERS.get(_method(config).sampler)(range(config.inversion.steps))  # only its length is read
    return sampler.default_start(config.edit.skip)


def edit_steps(config: Config) -> int:
    return config.inversion.steps - start_step(config)


def inversion_calls(config: Config, frames: int, latent_hw: tuple[int, int]) -> int:
    """F x steps x source rows x (|group| for mbdi)."""
    return frames * config.inversion.steps * source_rows(config) * group_size(config, latent_hw)


def _injected_source_rows(config: Config) -> int:
    """Rows of the source branch that feeds injection: the record's rows when reconstructed, else 1."""
    from vidinv.registry import SAMPLERS

    exact = SAMPLERS.get(_method(config).sampler).exact
    return 1 if exact or config.edit.source_branch == "inverted" else source_rows(config)


def pnp_calls(config: Config, frames: int, latent_hw: tuple[int, int]) -> int:
    """F x (R_e x S + R_s x max(0, K - start)): the source rows run only while injecting."""
    ed, n = config.edit, config.inversion.steps
    injected = max(0, round(max(ed.inject_features, ed.inject_attention) * n) - start_step(config))
    per_group = frames * (edit_rows(config) * edit_steps(config) + _injected_source_rows(config) * injected)
    return per_group * group_size(config, latent_hw)


def tokenflow_calls(config: Config, frames: int, latent_hw: tuple[int, int]) -> int:
    """Every edit step: rows x (K keyframes + F frames), K = ceil(F / edit.keyframe_stride); the
    source rows run every step (the correspondences)."""
    keyframes = math.ceil(frames / config.edit.keyframe_stride)
    per_step = (_injected_source_rows(config) + edit_rows(config)) * (keyframes + frames)
    return edit_steps(config) * per_step * group_size(config, latent_hw)


def fatezero_calls(config: Config, frames: int, latent_hw: tuple[int, int], *, recompute: bool = False) -> int:
    """F x R_e x S with a stored store; recomputing adds a source row for the fused steps (and a
    mask pre-pass per masked step with blend words)."""
    ed, n, start = config.edit, config.inversion.steps, start_step(config)
    calls = frames * edit_rows(config) * edit_steps(config)
    if recompute:
        fused = max(0, max(round(ed.self_attn_steps * n), round(ed.cross_attn_steps * n)) - start)
        calls += frames * fused * (2 if ed.blend_words else 1)
    return calls * group_size(config, latent_hw)


EDIT_CALLS = {"pnp": pnp_calls, "tokenflow": tokenflow_calls, "fatezero": fatezero_calls}


def frame_calls(
    config: Config, command: str, frames: int, latent_hw: tuple[int, int], store_in_memory: bool = True
) -> dict[str, int]:
    """UNet frame-calls per stage of `command` (edit | invert | reconstruct)."""
    calls = {"inversion": inversion_calls(config, frames, latent_hw)}
    if command == "edit" and config.edit.method == "fatezero":
        calls["edit"] = fatezero_calls(config, frames, latent_hw, recompute=not store_in_memory)
    elif command == "edit" and config.edit.method in EDIT_CALLS:
        calls["edit"] = EDIT_CALLS[config.edit.method](config, frames, latent_hw)
    elif command == "edit":  # a plug-in: its own prediction, if it makes one
        from vidinv.editing import get_edit_method

        predicted = get_edit_method(config.edit.method).predicted_frame_calls(config, frames, latent_hw)
        if predicted is not None:
            calls["edit"] = predicted
    elif command == "reconstruct":
        calls["reconstruction"] = edit_steps(config) * frames * source_rows(config) * group_size(config, latent_hw)
    return calls


# ---------------------------------------------------------------- shapes of the clip and the model
def clip_shape(config: Config) -> tuple[int, int, int]:
    """(frames, height, width) of the configured clip: one frame is decoded for the source size."""
    from vidinv.io import read_video
    from vidinv.io.resize import target_size

    v = config.video
    first = read_video(v.path, start=v.start, num_frames=1, stride=v.stride)
    size = None if v.height is None and v.width is None else (v.height, v.width)
    height, width = target_size(tuple(first.frames.shape[-2:]), size)
    return v.num_frames or _count_frames(Path(v.path), v.start, v.stride), height, width


def _count_frames(path: Path, start: int, stride: int) -> int:
    """Frames a whole-clip selection keeps (num_frames null): the container's count, after start/stride."""
    if path.is_dir():
        from vidinv.io.images import list_images

        total = len(list_images(path))
    else:
        import av

        with av.open(str(path)) as container:
            total = container.streams.video[0].frames
    return max(1, math.ceil((total - start) / stride))


def _folder_configs(folder: Path) -> dict:
    """The component configs of a diffusers folder (SDXL: text_encoder_2's too)."""
    names = ["unet", "vae", "text_encoder"] + ["text_encoder_2"] * (folder / "text_encoder_2" / "config.json").is_file()
    try:
        return {name: json.loads((folder / name / "config.json").read_text()) for name in names}
    except (OSError, ValueError) as err:
        raise VidinvError(f"plan: cannot read the component configs of {folder}: {err}") from err


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


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Modules built inside get parameters of `dtype`."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


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


def fake_text_conditioning(configs: dict, rows: int, dtype: torch.dtype):
    """Empty text conditioning of `rows` prompt rows shaped for the UNet of `configs` (SDXL: with its
    added conditioning, the pooled embedding of text_encoder_2 and the six size ids)."""
    from vidinv.models.text import TextConditioning

    emb = torch.empty(rows, 77, configs["unet"].get("cross_attention_dim", 768), dtype=dtype)
    if configs["unet"].get("addition_embed_type") != "text_time":
        return TextConditioning(emb)
    pooled = configs.get("text_encoder_2", {}).get("projection_dim", 1280)
    added = {"text_embeds": torch.empty(rows, pooled, dtype=dtype), "time_ids": torch.empty(rows, 6, dtype=dtype)}
    return TextConditioning(emb, added)


def fake_controlnet(source: str, unet) -> torch.nn.Module:
    """A ControlNet of `source`'s config (a folder's config.json), else of the UNet's encoder
    architecture (diffusers' `from_unet`, what the family's ControlNets share); call in fake mode."""
    from diffusers import ControlNetModel

    config = Path(os.path.expanduser(source)) / "config.json"
    if config.is_file():
        return ControlNetModel.from_config(json.loads(config.read_text()))
    return ControlNetModel.from_unet(unet)


def param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


# ---------------------------------------------------------------- the plan
@dataclass
class Plan:
    """What a run will cost (bytes unless named otherwise)."""

    command: str
    frames: int
    height: int
    width: int
    device: str
    frame_calls: dict[str, int]
    weights: dict[str, int]
    unet_activations: int
    vae_activations: int
    store_bytes: int | None
    device_peak: int
    host_peak: int
    host_parts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        mb = lambda n: f"{n / MB:,.0f} MB"  # noqa: E731
        calls = ", ".join(f"{k} {v:,}" for k, v in self.frame_calls.items())
        lines = [
            f"vidinv {self.command}: {self.frames} frames at {self.height}x{self.width} on {self.device}",
            f"  UNet frame-calls: {sum(self.frame_calls.values()):,} ({calls})",
            f"  weights: {mb(sum(self.weights.values()))} ("
            + ", ".join(f"{k} {mb(v)}" for k, v in self.weights.items())
            + ")",
            f"  activation peaks: one UNet call {mb(self.unet_activations)}, one VAE chunk {mb(self.vae_activations)}",
            f"  peak device memory: {mb(self.device_peak)}",
            f"  peak host memory: {mb(self.host_peak)} ("
            + ", ".join(f"{k} {mb(v)}" for k, v in self.host_parts.items())
            + ")",
        ]
        if self.store_bytes is not None:
            lines.append(f"  FateZero store: {mb(self.store_bytes)}")
        return "\n".join(lines)


def _unet_rows(config: Config, command: str) -> int:
    """Rows of the widest UNet call of the run (the edit's pair, or the inversion's rows)."""
    return source_rows(config) + (edit_rows(config) if command == "edit" else 0)


def configs_family(configs: dict):
    """The model family of these component configs (SDXL when they have text_encoder_2)."""
    from vidinv.models.family import family_from_configs

    pipeline = "StableDiffusionXLPipeline" if "text_encoder_2" in configs else "StableDiffusionPipeline"
    return family_from_configs("plan", {"_class_name": pipeline}, configs["unet"], {}, configs["vae"])


def _store_bytes(config: Config, unet, family, frames: int, latent_hw: tuple[int, int]) -> int:
    """FateZero's store for this run (`fatezero.predicted_store_bytes`), on the SD scheduler's table."""
    from diffusers import DDIMScheduler

    from vidinv.attention.frames import FramePattern
    from vidinv.editing.fatezero import predicted_store_bytes, store_plan
    from vidinv.inversion.timesteps import step_table
    from vidinv.models.tiny import SD_SCHEDULER_CONFIG

    table = step_table(DDIMScheduler(**SD_SCHEDULER_CONFIG), config.inversion.steps)
    plan = store_plan(SimpleNamespace(unet=unet, family=family), config, table, start_step(config))
    m = config.model
    pattern = FramePattern(
        m.frame_attention, keyframes=m.keyframes, keyframe_stride=m.keyframe_stride, group=m.attention_group
    )
    models = SimpleNamespace(unet=unet, tokenizer=SimpleNamespace(model_max_length=77))
    return predicted_store_bytes(models, plan, latent_hw, frames, pattern, group_size(config, latent_hw))


def store_in_memory(config: Config, store: int) -> bool:
    """FateZero's `edit.store` resolved as the edit resolves it (auto: memory when it fits the bound)."""
    mode = config.edit.store
    return mode == "memory" or (mode == "auto" and store <= config.edit.store_limit_mb * MB)


def plan_run(config: Config, command: str = "edit") -> Plan:
    """The prediction for `vidinv COMMAND` with this config (seconds: fake tensors only)."""
    from vidinv.attention import run_unet
    from vidinv.attention.inflate import install_from_config
    from vidinv.fake_memory import fake_mode, peak_bytes
    from vidinv.models import resolve_device, resolve_dtype

    rt = config.runtime
    device = resolve_device(config.model.device)
    dtype = resolve_dtype(config.model.dtype, device)
    frames, height, width = clip_shape(config)
    latent_hw = (height // 8, width // 8)
    configs = component_configs(config)
    latent_bytes = frames * LATENT_CHANNELS * latent_hw[0] * latent_hw[1] * 4  # fp32 in the loops
    with fake_mode():
        parts = build_fake_components(configs, dtype)
        unet, vae = parts["unet"], parts["vae"]
        install_from_config(unet, config.model)
        sim = frames if not rt.unet_chunk else min(frames, 2 * rt.unet_chunk)  # one chunk and its anchors
        batch = torch.empty(_unet_rows(config, command), sim, LATENT_CHANNELS, *latent_hw, dtype=dtype)
        text = fake_text_conditioning(configs, batch.shape[0], dtype)
        unet_act = peak_bytes(lambda: run_unet(unet, batch, torch.tensor(999), text, chunk=rt.unet_chunk))
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
    fatezero = command == "edit" and config.edit.method == "fatezero"
    store = (
        _store_bytes(config, unet, configs_family(configs), frames, latent_hw) if fatezero else None
    )  # outside: the step table is real
    in_memory = fatezero and store_in_memory(config, store)
    on_device = {"none": sum(weights.values()), "model": max(weights.values())}
    device_weights = largest_layer if rt.offload == "sequential" else on_device[rt.offload]
    working = WORKING_LATENTS * latent_bytes
    device_peak = device_weights + max(unet_act + working, vae_act + latent_bytes)
    from vidinv.registry import SAMPLERS

    noise = SAMPLERS.get(_method(config).sampler).latent_sets
    host_parts = {
        "baseline": HOST_BASELINE_BYTES,
        "weights": sum(weights.values()) if (rt.offload != "none" or device.type == "cpu") else 0,
        "record": (config.inversion.steps + 1) * latent_bytes * noise,
        "store": store if in_memory else 0,
        "frame chunks": 2 * chunk * 3 * height * width * (1 + 4),  # uint8 and float32 pixels
        "working latents": working,
    }
    if device.type == "cpu":
        host_parts["activations"] = max(unet_act, vae_act)
    return Plan(
        command, frames, height, width, str(device), frame_calls(config, command, frames, latent_hw, in_memory), weights,
        unet_act, vae_act, store, device_peak, sum(host_parts.values()), host_parts,
    )  # fmt: skip


def device_capacity(device: torch.device) -> int | None:
    """Total memory of a CUDA device (None for the CPU: the host's memory is the limit)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return None


def host_capacity() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(config: Config, command: str = "edit") -> Plan | None:
    """The plan, or a one-line VidinvError when its peak exceeds the device's or the host's memory;
    None for flow models (SD3, Flux), which have no memory plan yet."""
    from vidinv.models.flow import flow_family_of

    if flow_family_of(os.path.expanduser(config.model.pretrained)) is not None:
        return None
    plan = plan_run(config, command)
    device = torch.device(plan.device)
    capacity = device_capacity(device)
    if capacity is not None and plan.device_peak > capacity:
        raise VidinvError(
            f"plan: predicted peak device memory {plan.device_peak / MB:,.0f} MB exceeds {device}'s"
            f" {capacity / MB:,.0f} MB ({plan.frames} frames at {plan.height}x{plan.width};"
            " lower video.height/width, runtime.unet_chunk/vae_chunk, or set runtime.offload / vae_tiling)"
        )
    if plan.host_peak > host_capacity():
        raise VidinvError(
            f"plan: predicted peak host memory {plan.host_peak / MB:,.0f} MB exceeds this machine's"
            f" {host_capacity() / MB:,.0f} MB ({plan.frames} frames at {plan.height}x{plan.width})"
        )
    return plan
