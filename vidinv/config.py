"""One structured config for every command: YAML file -> defaults -> `key=value` overrides -> checks.

The CLI and the Python API take the same `Config` object. Unknown keys, wrong types and values out
of range are `VidinvError`s whose one-line message names the key (and the nearest valid key).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vidinv.errors import VidinvError, first_line
from vidinv.registry import EDIT_METHODS, INVERSION_METHODS

# Allowed values of the string options, checked by `validate` (method names: the registries').
CHOICES = {
    "model.dtype": ("auto", "fp32", "fp16", "bf16"),
    "model.prediction_type": ("auto", "epsilon", "v_prediction", "sample"),
    "model.attention": ("auto", "sdpa", "xformers", "naive"),
    "model.frame_attention": ("none", "sparse_causal", "keyframe", "full"),
    "model.keyframes": ("first", "middle", "stride"),
    "video.resize": ("center_crop", "stretch", "pad"),
    "inversion.transforms": ("auto", "rot90", "dihedral", "flips", "none"),
    "inversion.noise": ("shared", "independent"),
    "edit.source_branch": ("reconstructed", "inverted"),
    "edit.store_dtype": ("fp16", "fp32"),
    "edit.store": ("auto", "memory", "recompute"),
    "runtime.offload": ("none", "model", "sequential"),
    "runtime.record": ("auto", "memory", "disk"),
    "runtime.codec": ("h264", "ffv1", "png"),
    "runtime.audio": ("copy", "drop"),
}
REGISTRIES = {"inversion.method": INVERSION_METHODS, "edit.method": EDIT_METHODS}
CONTROL_KINDS = ("canny", "depth")  # edit.control: condition images computed from the source frames
DEPTH_ESTIMATOR = "Intel/dpt-hybrid-midas"  # edit.depth_estimator's default (diffusers' depth ControlNet examples)
MAX_SIDE = 8192  # video.height / width above this are refused before anything is allocated


@dataclass
class ModelConfig:
    pretrained: str = "tiny"  # tiny | hub id | diffusers folder | .safetensors/.ckpt file
    single_file_config: str | None = None  # single file only: diffusers folder/hub id with the component configs
    dtype: str = "auto"  # auto = on CUDA bf16 for Flux and Wan, fp16 for the others; fp32 elsewhere
    device: str = "auto"  # auto = cuda, then mps, then cpu
    attention: str = "auto"  # attention backend
    frame_attention: str = "sparse_causal"  # cross-frame attention mode of the inflated UNet
    keyframes: str = "first"  # anchors of `keyframe` mode: first | middle | stride
    keyframe_stride: int = 8  # with keyframes=stride: every k-th frame is an anchor
    attention_group: int = 16  # G of `full` mode: frames that attend to each other
    prediction_type: str = "auto"  # auto = the scheduler config's; epsilon | v_prediction | sample
    vae: str | None = None  # hub id / folder of a VAE replacing the pipeline's (e.g. an fp16-safe one)
    controlnet: Any = None  # ControlNet hub id / folder / single file, or a list of them
    t5: bool = True  # SD3: false loads it without its T5 text encoder (diffusers' memory-saving way)


@dataclass
class VideoConfig:
    path: str = "samples/bikes.mp4"  # video file or folder of images
    start: int = 0  # first frame (after decoding, before stride)
    num_frames: int | None = 16  # frames kept after stride; null = all
    stride: int = 1  # keep every n-th frame
    height: int | None = None  # output size; null = source size rounded down to a multiple of 8
    width: int | None = None
    resize: str = "center_crop"  # how to reach (height, width)


@dataclass
class InversionConfig:
    method: str = "freeinv"
    steps: int = 50
    source_prompt: str = ""
    guidance_scale: float | None = None  # null = the method's default (1.0; 3.5 for ddpm_ef)
    seed: int = 0
    transforms: str = "auto"  # FreeInv's group; auto: rot90 on square latents, else {id, rot180, hflip, vflip}
    noise: str = "shared"  # ddpm_ef: per-step noise shared by all frames or independent per frame
    control: bool = False  # apply the ControlNet(s) during the inversion too


@dataclass
class FlowEditConfig:
    """FlowEdit (edit.method flowedit, flow models); null = the paper's default for the model's family."""

    n_max: int | None = None  # edited steps, counted from the clean end (SD3: 33 of 50, Flux: 24 of 28)
    n_min: int = 0  # last steps sampled from the target alone (0 = pure FlowEdit)
    n_avg: int = 1  # noise draws averaged per step
    source_guidance: float | None = None  # SD3: CFG 3.5; Flux: embedded guidance 1.5
    target_guidance: float | None = None  # SD3: CFG 13.5; Flux: embedded guidance 5.5


@dataclass
class EditConfig:
    method: str = "pnp"
    target_prompt: str = ""
    negative_prompt: str = ""
    guidance_scale: float = 7.5
    inject_features: float = 0.8  # PnP: fraction of steps with residual-feature injection
    inject_attention: float = 0.5  # PnP: fraction of steps with self-attention q/k injection
    # PnP layers (diffusers module names); null = the model family's defaults (vidinv.models.family):
    # SD 1.x/2.x up_blocks.1.resnets.1 and every decoder self-attention but the first module's
    feature_layers: list[str] | None = None
    attention_layers: list[str] | None = None
    # the source branch the edit injects from: the DDIM reconstruction run beside the edit, or the
    # stored inversion latents of each step (TokenFlow's choice); identical for ddpm_ef
    source_branch: str = "reconstructed"
    seed: int = 0  # randomness of the edit itself (TokenFlow's keyframe offsets)
    # TokenFlow: one keyframe per group of this many frames (offset drawn per step)
    keyframe_stride: int = 8
    # TokenFlow: keyframes edited jointly (extended attention among them) per keyframe pass; a step's
    # keyframes are cut into consecutive windows of this many, so memory follows the window, not the
    # clip; 0 = all of a step's keyframes together (the paper's setting)
    keyframe_window: int = 16
    # FateZero: fraction of steps whose self-attention maps are replaced by the stored source maps
    self_attn_steps: float = 0.5
    cross_attn_steps: float = 0.8  # FateZero: fraction of steps whose cross-attention is blended with the stored maps
    # FateZero: attention layers (attn1/attn2 module names) stored and fused; null = every layer below
    # the full latent resolution (as prompt-to-prompt/FateZero store maps of at most 32x32 in SD at 512 px)
    store_layers: list[str] | None = None
    blend_words: list[str] = field(default_factory=list)  # FateZero: words whose cross-attention masks the edit
    mask_threshold: float = 0.3  # FateZero: threshold on the normalised cross-attention of blend_words
    store_limit_mb: int = 4096  # FateZero: bound on the attention store (CPU, fp16)
    # FateZero: where the source maps come from: captured during the inversion and held (memory),
    # recomputed by a source row in the edit (recompute), or auto = memory when it fits store_limit_mb
    store: str = "auto"
    store_dtype: str = "fp16"  # FateZero: precision of the stored maps (fp32 only for exactness checks)
    skip: int | None = None  # ddpm_ef: T_skip steps skipped; null = 36% of the steps
    control: Any = None  # ControlNet condition from the source frames: canny | depth, or one per ControlNet
    controlnet_scale: Any = 1.0  # ControlNet conditioning scale, or one per ControlNet
    depth_estimator: str = DEPTH_ESTIMATOR  # edit.control=depth: transformers depth model (folder / hub id)
    flowedit: FlowEditConfig = field(default_factory=FlowEditConfig)


@dataclass
class RuntimeConfig:
    output_dir: str = "outputs/run"
    vae_chunk: int = 8  # frames per VAE call; 0 = the whole clip at once
    unet_chunk: int = 8  # frames per UNet call (memory follows the chunk, not the clip); 0 = the whole clip
    overwrite: bool = False
    fps: float | None = None  # output fps; null = the input's (after stride)
    # save an interrupted inversion's state this often (seconds) to resume it; null = never
    checkpoint_seconds: float | None = 60.0
    # components on the CPU, moved to the device when called: whole models or layer by layer (accelerate)
    offload: str = "none"
    vae_tiling: bool = False  # VAE in overlapping spatial tiles (diffusers) for frames larger than one tile
    vae_tile_size: int = 512  # tile side in pixels (a multiple of 64); the overlap is a quarter of it
    record_dir: str | None = None  # the inversion record's folder; null = OUTPUT/inversion (batch items share one)
    # where the record's latents live while the run reads them: in memory, or in its file on disk,
    # written and read one step at a time (host memory no longer grows with steps x frames); auto =
    # disk when the record would pass record_limit_mb
    record: str = "auto"
    record_limit_mb: int = 2048
    # output videos: h264 (.mp4), ffv1 (.mkv, lossless) or png (a folder of frames, lossless); byte-identical reruns
    codec: str = "h264"
    # the source's audio in edited / side_by_side videos, cut to the selected frames (dropped with a note when stride != 1)
    audio: str = "copy"


@dataclass
class EvalConfig:
    """Metrics of `vidinv edit`'s metrics.json beyond the weight-free ones (as `vidinv eval --clip`)."""

    clip: str | None = None  # CLIP model (hub id / folder): CLIP-T with edit.target_prompt and CLIP-F; null = none


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    inversion: InversionConfig = field(default_factory=InversionConfig)
    edit: EditConfig = field(default_factory=EditConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def valid_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections included."""
    keys = []
    for f in fields(schema):
        key = prefix + f.name
        keys.append(key)
        if is_dataclass(f.default_factory if f.default_factory is not None else None):
            keys.extend(valid_keys(f.default_factory, key + "."))
    return keys


def _nearest_key(key: str) -> str:
    candidates = valid_keys()
    leaf_matches = [k for k in candidates if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
    close = leaf_matches or difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)
    return close[0]


def _declared_type(key: str) -> str | None:
    """The annotation of a dotted key in the schema, as written (e.g. 'Optional[int]')."""
    schema: Any = Config
    for part in key.split("."):
        match = [f for f in fields(schema) if f.name == part] if is_dataclass(schema) else []
        if not match:
            return None
        declared = match[0]
        schema = declared.default_factory if is_dataclass(declared.default_factory or None) else declared.type
    return schema.__name__.replace("Config", " section") if is_dataclass(schema) else str(schema)


def _explain(err: OmegaConfBaseException, origin: str) -> VidinvError:
    key = getattr(err, "full_key", None) or ""
    kind = type(err).__name__
    if kind in ("ConfigKeyError", "ConfigAttributeError") and key:
        return VidinvError(f"{origin}: unknown key '{key}' (did you mean '{_nearest_key(key)}'?)")
    declared = _declared_type(key) if key else None
    if kind == "ValidationError" and declared:
        value = getattr(err, "value", None)
        return VidinvError(f"{origin}: '{key}' got {value!r}, expected {declared}")
    return VidinvError(f"{origin}: {first_line(err)}")


def _merge(base: DictConfig, other: Any, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        raise _explain(err, origin) from err


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file at `path`, then `key=value` overrides; validated."""
    merged = OmegaConf.structured(Config)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise VidinvError(f"config file {path} does not exist")
        try:
            from_file = OmegaConf.load(path)
        except Exception as err:  # yaml errors have many classes; all mean the same to a user
            raise VidinvError(f"config file {path} is not valid YAML: {first_line(err)}") from err
        if not isinstance(from_file, DictConfig):
            raise VidinvError(f"config file {path} must hold a mapping of sections (model, video, ...)")
        merged = _merge(merged, from_file, str(path))
    given: dict[str, str] = {}
    for item in overrides or []:
        if "=" not in item:
            raise VidinvError(f"override {item!r} is not of the form key=value")
        key = item.split("=", 1)[0].strip().lstrip("+~")
        if key in given:
            raise VidinvError(f"override {item!r}: key '{key}' is given twice (also {given[key]!r})")
        given[key] = item
        try:
            dotlist = OmegaConf.from_dotlist([item])
        except Exception as err:  # OmegaConf's own errors, and yaml's for a malformed value (`[,0]`)
            raise VidinvError(f"override {item!r} cannot be parsed: {first_line(err)}") from err
        merged = _merge(merged, dotlist, f"override {item!r}")
    config = OmegaConf.to_object(merged)
    validate(config)
    return config


def config_from_dict(values: dict | None = None) -> Config:
    """A validated Config from nested dict values over the defaults (for the Python API)."""
    merged = _merge(OmegaConf.structured(Config), OmegaConf.create(values or {}), "config")
    config = OmegaConf.to_object(merged)
    validate(config)
    return config


def config_with(config: Config, values: dict[str, Any], origin: str = "config") -> Config:
    """A validated copy of `config` with dotted `key: value` changes (any YAML-typed value, e.g. a
    prompt with commas or a list), checked like overrides: `origin` names where they came from."""
    merged = OmegaConf.structured(config)
    for key, value in values.items():
        try:
            OmegaConf.update(merged, key, value, merge=False)
        except OmegaConfBaseException as err:
            raise _explain(err, origin) from err
    result = OmegaConf.to_object(merged)
    validate(result)
    return result


def get_key(config: Config, key: str) -> Any:
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _require(condition: bool, key: str, value: Any, wanted: str) -> None:
    if not condition:
        raise VidinvError(f"config: '{key}' is {value!r}, expected {wanted}")


def validate(config: Config) -> None:
    """Range and choice checks that the type system does not express."""
    for key, allowed in [*CHOICES.items(), *((k, r.names()) for k, r in REGISTRIES.items())]:
        value = get_key(config, key)
        _require(value in allowed, key, value, "one of " + ", ".join(allowed))
    v, inv, ed, rt, m = config.video, config.inversion, config.edit, config.runtime, config.model
    _require(v.start >= 0, "video.start", v.start, "an integer >= 0")
    _require(v.stride >= 1, "video.stride", v.stride, "an integer >= 1")
    _require(v.num_frames is None or v.num_frames >= 1, "video.num_frames", v.num_frames, "null or an integer >= 1")
    for key in ("height", "width"):
        size = getattr(v, key)
        _require(
            size is None or (8 <= size <= MAX_SIDE and size % 8 == 0),
            f"video.{key}",
            size,
            f"null or a multiple of 8 in 8..{MAX_SIDE}",
        )
    _require(1 <= inv.steps <= 1000, "inversion.steps", inv.steps, "an integer in 1..1000")
    _require(
        inv.guidance_scale is None or 0 <= inv.guidance_scale < math.inf,
        "inversion.guidance_scale",
        inv.guidance_scale,
        "null or a finite number >= 0",
    )
    _require(0 <= ed.guidance_scale < math.inf, "edit.guidance_scale", ed.guidance_scale, "a finite number >= 0")
    for key in ("inject_features", "inject_attention", "self_attn_steps", "cross_attn_steps", "mask_threshold"):
        value = getattr(ed, key)
        _require(0.0 <= value <= 1.0, f"edit.{key}", value, "a fraction in [0, 1]")
    _require(ed.store_limit_mb >= 0, "edit.store_limit_mb", ed.store_limit_mb, "an integer >= 0")
    _require(ed.keyframe_stride >= 1, "edit.keyframe_stride", ed.keyframe_stride, "an integer >= 1")
    _require(ed.keyframe_window >= 0, "edit.keyframe_window", ed.keyframe_window, "an integer >= 0 (0 = all keyframes)")
    _require(
        ed.skip is None or 0 <= ed.skip < inv.steps, "edit.skip", ed.skip, f"null or an integer in 0..{inv.steps - 1}"
    )
    _require(rt.vae_chunk >= 0, "runtime.vae_chunk", rt.vae_chunk, "an integer >= 0 (0 = whole clip)")
    _require(rt.unet_chunk >= 0, "runtime.unet_chunk", rt.unet_chunk, "an integer >= 0 (0 = whole clip)")
    _require(
        rt.checkpoint_seconds is None or rt.checkpoint_seconds >= 0,
        "runtime.checkpoint_seconds",
        rt.checkpoint_seconds,
        "null or a number of seconds >= 0",
    )
    _require(
        rt.vae_tile_size >= 64 and rt.vae_tile_size % 64 == 0,
        "runtime.vae_tile_size",
        rt.vae_tile_size,
        "a multiple of 64",
    )
    _require(rt.fps is None or 0 < rt.fps < math.inf, "runtime.fps", rt.fps, "null or a finite number > 0")
    _require(bool(rt.output_dir), "runtime.output_dir", rt.output_dir, "a folder path")
    _require(rt.record_dir is None or bool(rt.record_dir), "runtime.record_dir", rt.record_dir, "null or a folder path")
    _require(rt.record_limit_mb >= 0, "runtime.record_limit_mb", rt.record_limit_mb, "an integer >= 0")
    _require(m.keyframe_stride >= 1, "model.keyframe_stride", m.keyframe_stride, "an integer >= 1")
    _require(m.attention_group >= 1, "model.attention_group", m.attention_group, "an integer >= 1")
    _require(config.eval.clip is None or bool(config.eval.clip), "eval.clip", config.eval.clip, "null or a CLIP model")
    _validate_control(config)


def as_list(value) -> list:
    """A config value that may be one item or a list (model.controlnet, edit.control, ...) as a list."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _validate_control(config: Config) -> None:
    """model.controlnet, edit.control and edit.controlnet_scale: one value, or one per ControlNet."""
    nets, kinds, scales = (
        as_list(v) for v in (config.model.controlnet, config.edit.control, config.edit.controlnet_scale)
    )
    _require(all(isinstance(n, str) and n for n in nets), "model.controlnet", nets, "null, a source or a list of them")
    wanted = f"one of {', '.join(CONTROL_KINDS)} per ControlNet ({len(nets)})"
    _require(len(kinds) == len(nets) and set(kinds) <= set(CONTROL_KINDS), "edit.control", kinds, wanted)
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in scales)
    _require(
        numbers and len(scales) in (1, max(len(nets), 1)),
        "edit.controlnet_scale",
        scales,
        "a number >= 0 or one per ControlNet",
    )
    _require(not config.inversion.control or nets, "inversion.control", True, "false without model.controlnet")


def to_yaml(config: Config) -> str:
    """The resolved config as YAML; `load_config` of this text gives the same Config."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
