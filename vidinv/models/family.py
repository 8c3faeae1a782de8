"""Which model family a source is (SD 1.x, SD 2.x, SDXL) and what follows from it.

    family = detect_family("stabilityai/stable-diffusion-xl-base-1.0")   # model_index.json, no weights
    family = family_of(models)                                           # the loaded components

A `ModelFamily` holds what the engine needs to treat a family right: the prediction type (from the
scheduler config, or `model.prediction_type`), the default pixel size, the text encoders, whether
the empty negative prompt is zeros (SDXL's `force_zeros_for_empty_prompt`) and the default layers
of PnP/TokenFlow injection and of FateZero's attention store. Sources are recognised as diffusers
does: a folder's or hub repo's `model_index.json` (+ `unet/config.json`), or a single file's keys
(`infer_diffusers_model_type`). SD3 / Flux are `vidinv.models.flow`'s (recognised before these);
any other pipeline or checkpoint is a one-line `VidinvError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vidinv.errors import VidinvError
from vidinv.models.vae import spatial_factor

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
PIPELINES = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl"}
SINGLE_FILE_TYPES = {"v1": "sd1", "v2": "sd2", "xl_base": "sdxl"}
SD2_TEXT_DIM = 1024


@dataclass(frozen=True)
class FamilyTraits:
    """Per-family facts that do not depend on the checkpoint."""

    pipeline: str  # diffusers pipeline class
    feature_layers: tuple[str, ...]  # PnP/TokenFlow residual blocks (the decoder's 1/4-resolution level)
    store_min_level: int  # FateZero: store attention maps from this resolution level down (0 = full)
    text_encoders: tuple[str, ...]  # transformers classes, in order


SD_TRAITS = FamilyTraits("StableDiffusionPipeline", ("up_blocks.1.resnets.1",), 1, ("CLIPTextModel",))
TRAITS = {
    "sd1": SD_TRAITS,
    "sd2": SD_TRAITS,
    # SDXL's decoder has three levels (32, 64, 128 latent px at 1024): up_blocks.0 is the 1/4 level
    # SD 1.5's up_blocks.1 is; FateZero keeps maps of at most 32x32 (as in SD 1.5 at 512), level 2.
    "sdxl": FamilyTraits(
        "StableDiffusionXLPipeline",
        ("up_blocks.0.resnets.1",),
        2,
        ("CLIPTextModel", "CLIPTextModelWithProjection"),
    ),
}


@dataclass(frozen=True)
class ModelFamily:
    """What vidinv knows about a model: family, prediction type, default size, text encoders."""

    name: str  # sd1 | sd2 | sdxl
    prediction_type: str  # epsilon | v_prediction | sample
    size: int  # default pixel size (UNet sample_size x VAE factor): 512, 768, 1024
    zero_empty_negative: bool = False  # SDXL: the empty negative prompt's embeddings are zeros

    @property
    def traits(self) -> FamilyTraits:
        return TRAITS[self.name]

    @property
    def text_encoders(self) -> tuple[str, ...]:
        return self.traits.text_encoders

    @property
    def feature_layers(self) -> list[str]:
        """PnP/TokenFlow's default residual-feature layers (SD 1.5: `up_blocks.1.resnets.1`)."""
        return list(self.traits.feature_layers)

    def attention_layers(self, self_layers) -> list[str]:
        """PnP/TokenFlow's default self-attention layers: every decoder self-attention layer but those
        of the first decoder attention module (SD 1.5: up_blocks.1.attentions.0; SDXL:
        up_blocks.0.attentions.0, all ten transformer blocks)."""
        decoder = [name for name in self_layers if name.startswith("up_blocks.")]
        if not decoder:
            return []
        first = ".".join(decoder[0].split(".")[:4]) + "."
        return [name for name in decoder if not name.startswith(first)]

    def store_layers(self, unet) -> list[str]:
        """FateZero's default attention layers: those at or below the family's store level
        (SD: below the full latent resolution; SDXL: the 32x32 level at 1024 px)."""
        names = [name.rsplit(".", 1)[0] for name in unet.attn_processors]
        levels = len(unet.down_blocks)
        return [n for n in names if _level(n, levels) >= self.traits.store_min_level]

    def with_prediction_type(self, prediction_type: str | None) -> ModelFamily:
        """This family with `model.prediction_type` applied (`auto`/None keeps the scheduler's)."""
        if prediction_type in (None, "auto"):
            return self
        if prediction_type not in PREDICTION_TYPES:
            raise VidinvError(
                f"model.prediction_type: {prediction_type!r} is not one of auto, {', '.join(PREDICTION_TYPES)}"
            )
        return ModelFamily(self.name, prediction_type, self.size, self.zero_empty_negative)

    def report(self) -> list[tuple[str, str]]:
        """(name, value) rows for `vidinv info MODEL`."""
        return [
            ("family", self.name),
            ("prediction type", self.prediction_type),
            ("default size", f"{self.size}x{self.size}"),
            ("text encoders", ", ".join(self.text_encoders)),
        ]


SD1_DEFAULT = ModelFamily("sd1", "epsilon", 512)


@dataclass(frozen=True)
class FlowLayerDefaults:
    """PnP's default layers on a flow transformer (SD3, Flux): no block features, and the q, k of
    the image tokens in the later half of its attention layers (as PnP injects in the UNet's
    decoder); `edit.feature_layers` / `edit.attention_layers` name others."""

    feature_layers: tuple[str, ...] = ()

    def attention_layers(self, self_layers) -> list[str]:
        return list(self_layers[len(self_layers) // 2 :])


FLOW_LAYER_DEFAULTS = FlowLayerDefaults()


def family_or_default(models):
    """The family of `models` (Models.family) for its edit-layer defaults: flow transformers (family
    a name: sd3, flux) get `FLOW_LAYER_DEFAULTS`, models built without a family SD 1.x's."""
    family = getattr(models, "family", None)
    if isinstance(family, str):
        return FLOW_LAYER_DEFAULTS
    return family if isinstance(family, ModelFamily) else SD1_DEFAULT


def _level(layer: str, levels: int) -> int:
    """Resolution level of a UNet layer: 0 = full latent resolution, levels - 1 = the mid block."""
    part, _, rest = layer.partition(".")
    if part == "mid_block":
        return levels - 1
    index = int(rest.split(".", 1)[0])
    return index if part == "down_blocks" else levels - 1 - index


def unsupported(source: str, what: str) -> VidinvError:
    return VidinvError(f"model.pretrained: {source} is a {what}; vidinv supports SD 1.x, SD 2.x, SDXL, SD3 and Flux")


def family_from_configs(source: str, index: dict, unet: dict, scheduler: dict, vae: dict | None = None) -> ModelFamily:
    """The family of a diffusers pipeline from its model_index, unet and scheduler configs."""
    kind = PIPELINES.get(index.get("_class_name", ""))
    if kind is None:
        raise unsupported(source, f"{index.get('_class_name', 'pipeline without _class_name')} model")
    if kind == "sd":
        sd2 = unet.get("cross_attention_dim") == SD2_TEXT_DIM or unet.get("use_linear_projection", False)
        kind = "sd2" if sd2 else "sd1"
    factor = spatial_factor(vae or {})
    sample_size = unet.get("sample_size", 64)
    sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
    return ModelFamily(
        name=kind,
        prediction_type=scheduler.get("prediction_type", "epsilon"),
        size=int(sample_size) * factor,
        zero_empty_negative=kind == "sdxl" and bool(index.get("force_zeros_for_empty_prompt", True)),
    )


def family_of_components(parts: dict, index: dict | None = None) -> ModelFamily:
    """The family of loaded components (a dict: unet, vae, scheduler, text_encoder_2 if SDXL);
    `index` (the source's model_index.json) supplies SDXL's `force_zeros_for_empty_prompt`."""
    pipeline = TRAITS["sdxl" if parts.get("text_encoder_2") is not None else "sd1"].pipeline
    index = {"force_zeros_for_empty_prompt": True} | (index or {}) | {"_class_name": pipeline}
    configs = (dict(parts[name].config) for name in ("unet", "scheduler", "vae"))
    return family_from_configs("components", index, *configs)


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
    from vidinv.models.tiny import TINY_BUILDERS

    if pretrained in TINY_BUILDERS:
        family = family_of_components(TINY_BUILDERS[pretrained]())
    elif pretrained.endswith(SINGLE_FILE_SUFFIXES):
        family = (family_of_folder(single_file_config) if single_file_config else None) or _family_of_file(pretrained)
    else:
        family = family_of_folder(pretrained)
        if family is None:
            raise VidinvError(
                f"model.pretrained: cannot read model_index.json of {pretrained} (folder or cached hub id)"
            )
    return family.with_prediction_type(prediction_type)


# diffusers' defaults for single files without a config: image size per type, v2 is v-prediction
# unless the checkpoint is SD 2.x base (global_step 875000)
SINGLE_FILE_SIZES = {"sd1": 512, "sd2": 768, "sdxl": 1024}
SD2_BASE_STEP = 875000


def _family_of_file(path: str) -> ModelFamily:
    if not Path(path).is_file():
        raise VidinvError(f"model.pretrained: checkpoint file {path} does not exist")
    name = family_name_of_checkpoint(path)
    prediction = "epsilon"
    if name == "sd2":
        prediction = "epsilon" if _global_step(path) == SD2_BASE_STEP else "v_prediction"
    size = 512 if name == "sd2" and prediction == "epsilon" else SINGLE_FILE_SIZES[name]
    return ModelFamily(name, prediction, size, zero_empty_negative=name == "sdxl")


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
