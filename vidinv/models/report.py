"""`vidinv info MODEL`: what vidinv makes of a model source, read from its configs (no weights).

    rows = model_report("stabilityai/stable-diffusion-2-1")
    # [("source", "hub id"), ("family", "sd2"), ("prediction type", "v_prediction"), ...]

UNet families (SD 1.x, SD 2.x, SDXL) come from `vidinv.models.family.detect_family`; flow families
(`vidinv.models.flow.flow_family_of`, their records `vidinv.models.families`) from the pipeline's
model_index.json and the transformer / VAE / scheduler configs. The built-in tiny models' configs are data (`vidinv.models.tiny_configs`): no
model is built, so `vidinv info tiny-*` answers in about the time vidinv takes to import. A source
of any other kind is the one-line error of the family detection.
"""

from __future__ import annotations

from pathlib import Path

from vidinv.errors import VidinvError
from vidinv.models.causal_vae import temporal_factor
from vidinv.models.clip_vae import latent_frame_group
from vidinv.models.families import FAMILIES, Family
from vidinv.models.family import detect_family, read_config
from vidinv.models.flow import TINY_FLOW, flow_family_of
from vidinv.models.hub import hub_config_folder
from vidinv.models.paths import SINGLE_FILE_SUFFIXES
from vidinv.models.tiny_configs import TINY_PIPELINE_SETTINGS, TINY_PIPELINES, tiny_model_configs
from vidinv.models.vae import spatial_factor


def source_kind(pretrained: str) -> str:
    if pretrained in TINY_PIPELINES:
        return "built-in tiny random-weight model"
    if pretrained.endswith(SINGLE_FILE_SUFFIXES):
        return "single file"
    if Path(pretrained).is_dir():
        return "diffusers folder"
    if pretrained.count("/") == 1 and not Path(pretrained).exists() and not pretrained.startswith((".", "/")):
        return "hub id"
    raise VidinvError(f"model.pretrained: {pretrained} is no folder, .safetensors/.ckpt file, hub id or built-in name")


def single_file_row(path: str, family: Family, config: str | None) -> str:
    """What a flow single file holds and where the other components come from (a local
    single_file_config folder must exist)."""
    from vidinv.models.family import checkpoint_shapes
    from vidinv.models.flow import holds_vae
    from vidinv.models.paths import looks_like_path
    from vidinv.models.single_file import check_config_folder

    if config is not None and looks_like_path(config):
        check_config_folder(config)
    vae = holds_vae(checkpoint_shapes(path))
    rest = f"from {config}" if config else "from model.single_file_config (not set)"
    return f"{family.display} transformer{' and VAE' if vae else ''} (original layout); the other components {rest}"


def _flow_configs(pretrained: str | None) -> tuple[dict, dict, dict]:
    """model_index.json and the {component: config} of a flow source (tiny: its configs as data, no
    model built; None, a single file without single_file_config: none)."""
    if pretrained is None:
        return {}, {}, {}
    if pretrained in TINY_FLOW:
        parts = tiny_model_configs(pretrained)
        index = {"_class_name": TINY_PIPELINES[pretrained]} | {name: ["", cls] for name, (cls, _) in parts.items()}
        index |= TINY_PIPELINE_SETTINGS.get(pretrained, {})
        return index, {name: config for name, (_, config) in parts.items()}, parts["scheduler"][1]
    index = read_config(pretrained, "model_index.json") or {}
    configs = {part: read_config(pretrained, f"{part}/config.json") or {} for part in ("transformer", "vae")}
    return index, configs, read_config(pretrained, "scheduler/scheduler_config.json") or {}


def _text_encoders(index: dict) -> str:
    names = sorted(key for key in index if key.startswith("text_encoder"))
    classes = [index[key][1] for key in names if isinstance(index[key], (list, tuple)) and index[key][1]]
    return ", ".join(classes) or "none"


def flow_report(pretrained: str | None, family: Family) -> list[tuple[str, str]]:
    index, configs, scheduler = _flow_configs(pretrained)
    size = family.default_size  # the pipeline's, where the transformer config does not say (SD3's does)
    sample = configs.get("transformer", {}).get("sample_size")
    factor = spatial_factor(configs.get("vae", {}))
    if isinstance(sample, int):
        size = (sample * factor, sample * factor)
    rows = [
        ("family", family.name),
        ("pipeline", index.get("_class_name") or family.pipeline),
        ("prediction type", _flow_prediction(scheduler) if family.flow else _ddpm_prediction(index, scheduler)),
        ("default size", f"{size[1]}x{size[0]}"),
        ("shift", str(_shift(scheduler)) + (" (dynamic)" if scheduler.get("use_dynamic_shifting") else ""))
        if family.flow
        else ("grid", _ddpm_grid(scheduler)),
        ("text encoders", _text_encoders(index)),
    ]
    if pretrained is None:  # a single file alone: no scheduler, no encoders
        return rows[:4]
    per_latent = temporal_factor(configs.get("vae", {}))
    if per_latent > 1:
        multiple = per_latent * latent_frame_group(family.vae)  # CogVideoX: latent frames decoded in pairs
        rows.append(("frames", f"1 + a multiple of {multiple} (causal video VAE: {per_latent} frames a latent frame)"))
    if index.get("boundary_ratio") is not None and index.get("transformer_2", [None, None])[-1]:  # Wan 2.2 A14B
        boundary = index["boundary_ratio"] * scheduler.get("num_train_timesteps", 1000)
        rows.append(("experts", f"2: transformer at t >= {boundary:g}, transformer_2 below"))
    if index.get("expand_timesteps"):  # Wan 2.2 TI2V
        rows.append(("timesteps", "one per token"))
    return rows


def _flow_prediction(scheduler: dict) -> str:
    """The prediction row: velocity, stepped by Euler (on UniPC's flow grid for Wan's pipelines)."""
    name = scheduler.get("_class_name", "FlowMatchEulerDiscreteScheduler")
    if name == "FlowMatchEulerDiscreteScheduler":
        return "flow (velocity), FlowMatchEulerDiscreteScheduler"
    return f"flow (velocity), Euler steps on {name}'s flow grid"


def _ddpm_prediction(index: dict, scheduler: dict) -> str:
    """The prediction row of a DDPM transformer (CogVideoX): the scheduler's parametrisation and class."""
    name = (index.get("scheduler") or [None, None])[-1] or scheduler.get("_class_name", "DDIMScheduler")
    return f"{scheduler.get('prediction_type', 'epsilon')}, {name}"


def _ddpm_grid(scheduler: dict) -> str:
    """The DDIM grid of a DDPM transformer: its spacing, SNR shift and terminal SNR (CogVideoX's)."""
    zero = ", zero terminal SNR" if scheduler.get("rescale_betas_zero_snr") else ""
    return (
        f"{scheduler.get('timestep_spacing', 'leading')} DDIM, SNR shift {scheduler.get('snr_shift_scale', 1.0)}{zero}"
    )


def video_edit_methods(family: Family) -> str:
    """The registered edit methods that run on a native video model of `family`."""
    from vidinv.registry import EDIT_METHODS, runs_on_video_model

    return ", ".join(n for n in EDIT_METHODS.names() if runs_on_video_model(EDIT_METHODS.get(n), family))


def _shift(scheduler: dict) -> float:
    """The flow grid's shift: FlowMatchEulerDiscreteScheduler's `shift`, UniPC's `flow_shift` (Wan)."""
    return scheduler.get("shift", scheduler.get("flow_shift", 1.0))


def edit_methods_for(kind: str) -> str:
    """The registered edit methods that run on `kind` models: unet | flow (frame transformers) | video."""
    from vidinv.registry import EDIT_METHODS

    flag, default = {"unet": ("unet_models", True), "flow": ("flow_models", False), "video": ("video_models", False)}[
        kind
    ]
    return ", ".join(n for n in EDIT_METHODS.names() if getattr(EDIT_METHODS.get(n), flag, default))


def model_report(
    pretrained: str, *, single_file_config: str | None = None, prediction_type: str = "auto"
) -> list[tuple[str, str]]:
    """(name, value) rows describing `pretrained`; VidinvError (one line) for unsupported sources."""
    kind = source_kind(pretrained)
    rows = [("source", f"{pretrained} ({kind})")]
    if kind == "hub id":  # its configs from the cache or the hub (no weights); one line when neither
        pretrained = str(hub_config_folder(pretrained))
    family = FAMILIES.get(flow_family_of(pretrained, single_file_config))
    if family is not None:
        if kind == "single file":
            rows.append(("single file", single_file_row(pretrained, family, single_file_config)))
            pretrained = single_file_config
        methods = video_edit_methods(family) if family.video else edit_methods_for("flow")
        return rows + flow_report(pretrained, family) + [("edit methods", methods)]
    found = detect_family(pretrained, single_file_config, prediction_type)
    rows += found.report()[:1] + [("pipeline", found.pipeline)] + found.report()[1:]
    return rows + [("edit methods", edit_methods_for("unet"))]


def format_rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
