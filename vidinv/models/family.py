"""Which model family a source is (SD 1.x, SD 2.x, SDXL) and what follows from it.

    family = detect_family("stabilityai/stable-diffusion-xl-base-1.0")   # model_index.json, no weights
    family = family_of(models)                                           # the loaded components

A `ModelFamily` is the family's record (`vidinv.models.families.Family`: text encoders, the default
layers of PnP/TokenFlow injection and of FateZero's attention store, ...) with what the checkpoint
says: the prediction type (from the scheduler config, or `model.prediction_type`), the default
pixel size and whether the empty negative prompt is zeros (SDXL's `force_zeros_for_empty_prompt`). Sources are recognised as diffusers
does: a folder's or hub repo's `model_index.json` (+ `unet/config.json`), or a single file's keys
(`infer_diffusers_model_type`). SD3 / Flux are `vidinv.models.flow`'s (recognised before these);
any other pipeline or checkpoint is a one-line `VidinvError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

from vidinv.errors import VidinvError
from vidinv.models.families import FAMILIES, SD1, SDXL, Family, families_where
from vidinv.models.vae import spatial_factor

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
UNET_FAMILIES = families_where(flow=False, adapter=None)  # the UNet families (not CogVideoX, a DDPM DiT)
# diffusers' single-file model types of the UNet families (infer_diffusers_model_type)
SINGLE_FILE_TYPES = {kind: f.name for f in UNET_FAMILIES for kind in f.single_file_types}
SD2_TEXT_DIM = 1024


@dataclass(frozen=True)
class ModelFamily(Family):
    """A checkpoint's family: its family's record (`vidinv.models.families.Family`: text encoders,
    default layers, ...) with what the checkpoint says: prediction type, default pixel size, and
    whether the empty negative prompt is zeros. `ModelFamily.of(name, ...)` makes one."""

    prediction_type: str = "epsilon"  # epsilon | v_prediction | sample
    size: int = 512  # default pixel size (UNet sample_size x VAE factor): 512, 768, 1024
    zero_empty_negative: bool = False  # SDXL: the empty negative prompt's embeddings are zeros

    @classmethod
    def of(cls, name: str, prediction_type: str, size: int, zero_empty_negative: bool = False) -> ModelFamily:
        """Family `name`'s record with a checkpoint's prediction type, size and empty-negative rule."""
        record = FAMILIES[name]
        traits = {f.name: getattr(record, f.name) for f in fields(Family)}
        return cls(**traits, prediction_type=prediction_type, size=size, zero_empty_negative=zero_empty_negative)

    def with_prediction_type(self, prediction_type: str | None) -> ModelFamily:
        """This family with `model.prediction_type` applied (`auto`/None keeps the scheduler's)."""
        if prediction_type in (None, "auto"):
            return self
        if prediction_type not in PREDICTION_TYPES:
            raise VidinvError(
                f"model.prediction_type: {prediction_type!r} is not one of auto, {', '.join(PREDICTION_TYPES)}"
            )
        return replace(self, prediction_type=prediction_type)

    def report(self) -> list[tuple[str, str]]:
        """(name, value) rows for `vidinv info MODEL`."""
        return [
            ("family", self.name),
            ("prediction type", self.prediction_type),
            ("default size", f"{self.size}x{self.size}"),
            ("text encoders", ", ".join(self.text_encoders)),
        ]


SD1_DEFAULT = ModelFamily.of("sd1", "epsilon", 512)


def family_or_default(models) -> Family:
    """The family of `models` for its edit-layer defaults (`Family.attention_layers`, ...): its
    record (`Models.family`, `PipelineModels.family`), SD 1.x's for models built without one."""
    family = getattr(models, "family", None)
    return family if isinstance(family, Family) else SD1_DEFAULT


def unsupported(source: str, what: str) -> VidinvError:
    return VidinvError(f"model.pretrained: {source} is a {what}; vidinv supports SD 1.x, SD 2.x, SDXL, SD3 and Flux")


def family_from_configs(source: str, index: dict, unet: dict, scheduler: dict, vae: dict | None = None) -> ModelFamily:
    """The family of a diffusers pipeline from its model_index, unet and scheduler configs."""
    candidates = [f.name for f in UNET_FAMILIES if f.pipeline == index.get("_class_name")]
    if not candidates:
        raise unsupported(source, f"{index.get('_class_name', 'pipeline without _class_name')} model")
    kind = candidates[0]
    if len(candidates) > 1:  # StableDiffusionPipeline: SD 1.x or SD 2.x, by the UNet's text width
        sd2 = unet.get("cross_attention_dim") == SD2_TEXT_DIM or unet.get("use_linear_projection", False)
        kind = "sd2" if sd2 else "sd1"
    factor = spatial_factor(vae or {})
    sample_size = unet.get("sample_size", 64)
    sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
    return ModelFamily.of(
        kind,
        prediction_type=scheduler.get("prediction_type", "epsilon"),
        size=int(sample_size) * factor,
        zero_empty_negative=FAMILIES[kind].reads_force_zeros and bool(index.get("force_zeros_for_empty_prompt", True)),
    )


def family_of_components(parts: dict, index: dict | None = None) -> ModelFamily:
    """The family of loaded components (a dict: unet, vae, scheduler, text_encoder_2 if SDXL);
    `index` (the source's model_index.json) supplies SDXL's `force_zeros_for_empty_prompt`."""
    pipeline = (SDXL if parts.get("text_encoder_2") is not None else SD1).pipeline
    index = {"force_zeros_for_empty_prompt": True} | (index or {}) | {"_class_name": pipeline}
    configs = (dict(parts[name].config) for name in ("unet", "scheduler", "vae"))
    return family_from_configs("components", index, *configs)


def family_of_tiny(name: str) -> ModelFamily:
    """The family of a built-in tiny UNet model (tiny, tiny-sd2, tiny-sdxl) from its configs as data."""
    from vidinv.models.tiny_configs import TINY_PIPELINES, tiny_model_configs

    parts = {part: config for part, (_, config) in tiny_model_configs(name).items()}
    index = {"_class_name": TINY_PIPELINES[name], "force_zeros_for_empty_prompt": True}
    return family_from_configs(name, index, parts["unet"], parts["scheduler"], parts["vae"])


# --- detection without loading weights ------------------------------------------------------------


def read_config(source: str, name: str) -> dict | None:
    """`name` (e.g. unet/config.json) of a local folder or a hub repo (cache first); None if unavailable."""
    path = Path(source) / name
    if Path(source).is_dir():
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    from huggingface_hub import hf_hub_download

    try:
        return json.loads(Path(hf_hub_download(source, name)).read_text(encoding="utf-8"))
    except Exception:  # offline, unknown repo, no such file: the loader reports it in its own words
        return None


def family_of_folder(source: str) -> ModelFamily | None:
    """The family of a diffusers folder or hub id from its configs; None when they cannot be read."""
    index = read_config(source, "model_index.json")
    if index is None:
        return None
    configs = [read_config(source, f"{part}/config.json") or {} for part in ("unet", "vae")]
    scheduler = read_config(source, "scheduler/scheduler_config.json") or {}
    return family_from_configs(source, index, configs[0], scheduler, configs[1])


def detect_family(pretrained: str, single_file_config: str | None = None, prediction_type: str = "auto") -> ModelFamily:
    """The family of a source without loading its weights (`vidinv info MODEL`)."""
    from vidinv.models.paths import SINGLE_FILE_SUFFIXES

    if pretrained in {f.tiny for f in UNET_FAMILIES}:  # tiny, tiny-sd2, tiny-sdxl: their configs, no model built
        family = family_of_tiny(pretrained)
    elif pretrained.endswith(SINGLE_FILE_SUFFIXES):
        family = (family_of_folder(single_file_config) if single_file_config else None) or _family_of_file(pretrained)
    else:
        family = family_of_folder(pretrained)
        if family is None:
            raise VidinvError(
                f"model.pretrained: cannot read model_index.json of {pretrained} (folder or cached hub id)"
            )
    return family.with_prediction_type(prediction_type)


# diffusers' defaults for single files without a config: the family's image size, v2 is v-prediction
# unless the checkpoint is SD 2.x base (global_step 875000)
SD2_BASE_STEP = 875000


def _family_of_file(path: str) -> ModelFamily:
    if not Path(path).is_file():
        raise VidinvError(f"model.pretrained: checkpoint file {path} does not exist")
    name = family_name_of_checkpoint(path)
    prediction = "epsilon"
    if name == "sd2":
        prediction = "epsilon" if _global_step(path) == SD2_BASE_STEP else "v_prediction"
    size = 512 if name == "sd2" and prediction == "epsilon" else FAMILIES[name].default_size[0]
    return ModelFamily.of(name, prediction, size, zero_empty_negative=FAMILIES[name].reads_force_zeros)


def _global_step(path: str) -> int | None:
    if not path.endswith(".ckpt"):
        return None
    import torch

    checkpoint = torch.load(path, map_location="meta", weights_only=True, mmap=True)
    return checkpoint.get("global_step")


class _Shape:
    """A stand-in tensor with only `.shape` (what infer_diffusers_model_type reads)."""

    def __init__(self, shape):
        self.shape = tuple(shape)


def checkpoint_shapes(path: str) -> dict:
    """key -> object with .shape, reading a .safetensors header only (a .ckpt is loaded)."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            return {key: _Shape(handle.get_slice(key).get_shape()) for key in handle.keys()}
    import torch

    checkpoint = torch.load(path, map_location="meta", weights_only=True, mmap=True)
    return checkpoint.get("state_dict", checkpoint)


def family_name_of_checkpoint(path: str) -> str:
    """sd1 / sd2 / sdxl for a single-file checkpoint; a one-line error for anything else (keys
    diffusers does not know, which it calls `v1`, too: an SD 1.x file has an LDM UNet)."""
    from diffusers.loaders.single_file_utils import LDM_UNET_KEY, infer_diffusers_model_type

    try:
        shapes = checkpoint_shapes(path)
        model_type = infer_diffusers_model_type(shapes)
    except Exception as err:  # corrupt or foreign files: the loader reports them
        raise VidinvError(f"model.pretrained: cannot read checkpoint {path}: {type(err).__name__}") from err
    if model_type == "v1" and not any(key.startswith(LDM_UNET_KEY) for key in shapes):
        raise unsupported(path, "checkpoint of no type diffusers knows (no LDM UNet keys)")
    if model_type not in SINGLE_FILE_TYPES:
        raise unsupported(path, f"'{model_type}' checkpoint")
    return SINGLE_FILE_TYPES[model_type]
