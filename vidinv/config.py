"""One structured config for every command: YAML file -> defaults -> `key=value` overrides -> checks.

The CLI and the Python API take the same `Config` object. Unknown keys, wrong types and values out
of range are `VidinvError`s whose one-line message names the key (and the nearest valid key).
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
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
    "runtime.offload": ("none", "model", "sequential"),
    "runtime.record": ("auto", "memory", "disk"),
    "runtime.codec": ("h264", "ffv1", "png"),
    "runtime.audio": ("copy", "drop"),
}
REGISTRIES = {"inversion.method": INVERSION_METHODS, "edit.method": EDIT_METHODS}
CONTROL_KINDS = ("canny", "depth")  # edit.control: condition images computed from the source frames
DEPTH_ESTIMATOR = "Intel/dpt-hybrid-midas"  # edit.depth_estimator's default (diffusers' depth ControlNet examples)
MAX_SIDE = 8192  # video.height / width above this are refused before anything is allocated
log = logging.getLogger("vidinv")


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
    # LoRA files applied to the model (docs/models.md#lora): a .safetensors path, or {path, scale, name,
    # expert} (scale: any finite number, 1.0 unless given; name: its adapter's, lora_0, lora_1, ... unless
    # given; expert: Wan 2.2 A14B's transformer it loads into, high (the default) or low), or a list of them,
    # composed; diffusers or Kohya layout, for the model's family (denoiser, text encoders)
    lora: Any = None
    # merge the scaled LoRAs into the weights once loaded (runs as fast as the base model); false keeps
    # peft's LoRA layers beside the weights (the same result to float rounding, ~1e-6 relative in fp32)
    lora_fuse: bool = True


@dataclass
class VideoConfig:
    path: str = "samples/bikes.mp4"  # video file or folder of images
    start: int = 0  # first frame (after decoding, before stride)
    num_frames: int | None = 16  # frames kept after stride; null = all
    stride: int = 1  # keep every n-th frame
    height: int | None = None  # output size; null = source size rounded down to a multiple of 8
    width: int | None = None  # give only one of height / width to keep the clip's aspect ratio
    resize: str = "center_crop"  # how to reach (height, width)


@dataclass
class InversionConfig:
    method: str = "freeinv"  # how the clip is inverted (a registered inversion method)
    steps: int = 50  # denoising steps of the inversion, and of the reconstruction and the edit from it
    source_prompt: str = ""  # what the clip shows; the inversion's text condition
    guidance_scale: float | None = None  # null = the method's default (1.0; 3.5 for ddpm_ef)
    seed: int = 0  # FreeInv's transform schedule, DDPM-EF's noise maps
    transforms: str = "auto"  # FreeInv's group; auto: rot90 on square latents, else {id, rot180, hflip, vflip}
    # rf_solver / fireflow: see the model through FreeInv's transform of each step (inversion.transforms,
    # inversion.seed), one transform for both evaluations of a step
    freeinv: bool = False
    noise: str = "shared"  # ddpm_ef: per-step noise shared by all frames or independent per frame
    control: bool = False  # apply the ControlNet(s) during the inversion too


@dataclass
class EditConfig:
    """What every edit method reads; each method's own settings are its section `edit.NAME`
    (the dataclass its class declares as `settings`, e.g. `edit.pnp`, `edit.fatezero`)."""

    method: str = "pnp"  # how the edit keeps the source's structure (a registered edit method)
    target_prompt: str = ""  # what the edited clip should show
    negative_prompt: str = ""  # the unconditional row's prompt of the edit's guidance
    guidance_scale: float = 7.5  # classifier-free guidance of the edit (cfg_tar for ddpm_ef)
    seed: int = 0  # randomness of the edit itself (TokenFlow's keyframe offsets, FlowEdit's noise)
    skip: int | None = None  # ddpm_ef: T_skip steps skipped; null = 36% of the steps
    control: Any = None  # ControlNet condition from the source frames: canny | depth, or one per ControlNet
    controlnet_scale: Any = 1.0  # ControlNet conditioning scale, or one per ControlNet
    depth_estimator: str = DEPTH_ESTIMATOR  # edit.control=depth: transformers depth model (folder / hub id)
    # confine the edit (every method; docs/methods.md §8): a mask video or folder of images (its frames
    # selected and fitted as the clip's, video.*) or one image for every frame; white = may change, black
    # = the source's, gray = partly; area-averaged to the latent grid, outside it the edit follows the
    # source branch at every step; null = no mask
    mask: str | None = None
    # or: words of the source prompt whose cross-attention (UNet) / text-token attention (SD3, Flux,
    # Wan) in the source branch gives the mask, per frame and step (as FateZero's blend words)
    mask_words: list[str] = field(default_factory=list)
    mask_words_threshold: float = 0.3  # mask_words: threshold on the per-frame normalised attention of the words
    mask_dilate: int = 0  # grow the mask by this many latent cells (a cell: 8 x 8 pixels)
    mask_feather: int = 0  # then a linear ramp from 1 to 0 over this many latent cells outside it


@dataclass
class RuntimeConfig:
    output_dir: str = "outputs/run"  # the run's folder (videos, metrics.json, config.yaml, the inversion record)
    vae_chunk: int = 8  # frames per VAE call; 0 = the whole clip at once
    unet_chunk: int = 8  # frames per UNet call (memory follows the chunk, not the clip); 0 = the whole clip
    # latent frames per temporal window of a video transformer (Wan): a longer clip runs window by window
    # at every step, overlaps blended with linear ramps (memory follows the window, not the clip); the
    # clip must be whole windows. null = the model's native length (Wan: 21 latent frames = 81 frames),
    # 0 = the whole clip in one call. Frame models (SD, SDXL, SD3, Flux) ignore it (a note): unet_chunk chunks them
    window: int | None = None
    # latent frames shared by consecutive windows, below runtime.window; null = a quarter of the window,
    # rounded, at least 1 (Wan's 21: 5, stride 16: 81, 145, 209, 273, 337 frames are whole windows)
    window_overlap: int | None = None
    overwrite: bool = False  # write into a non-empty output folder, replacing an earlier run's results
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
    record_limit_mb: int = 2048  # record=auto: the size above which the record lives on disk
    # output videos: h264 (.mp4), ffv1 (.mkv, lossless) or png (a folder of frames, lossless); byte-identical reruns
    codec: str = "h264"
    # the source's audio in edited / side_by_side videos, cut to the selected frames (dropped with a note when stride != 1)
    audio: str = "copy"


@dataclass
class EvalConfig:
    """Metrics of `vidinv edit`'s metrics.json beyond the weight-free ones (as `vidinv eval --clip`)."""

    clip: str | None = None  # CLIP model (hub id / folder): CLIP-T with edit.target_prompt and CLIP-F; null = none
    # the edit's mask (as `vidinv eval --mask`: a video, a folder of images or one image; white = edited),
    # its frames selected and sized as video.*: PSNR/SSIM of the region outside it; null = none
    mask: str | None = None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)  # the weights and how they run
    video: VideoConfig = field(default_factory=VideoConfig)  # the clip: which frames, at what size
    inversion: InversionConfig = field(default_factory=InversionConfig)  # the clip to an inversion record
    edit: EditConfig = field(default_factory=EditConfig)  # the record to the edited clip
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # outputs, chunking, memory
    eval: EvalConfig = field(default_factory=EvalConfig)  # metrics that need weights

    def __post_init__(self):
        if type(self.edit) is EditConfig:  # the edit section with every registered method's own section
            self.edit = edit_schema()(**{f.name: getattr(self.edit, f.name) for f in fields(EditConfig)})

    def __reduce__(self):  # pickled as its YAML: the edit section's class is composed per process
        return config_from_yaml, (to_yaml(self),)

    def __copy__(self):
        return Config(**{f.name: getattr(self, f.name) for f in fields(self)})

    def __deepcopy__(self, memo):
        return Config(**{f.name: copy.deepcopy(getattr(self, f.name), memo) for f in fields(self)})


# flat keys of the edit section before each method had its own (one release): key -> method section
MOVED_EDIT_KEYS = {
    **dict.fromkeys(("inject_features", "inject_attention", "feature_layers", "attention_layers"), "pnp"),
    "source_branch": "pnp",
    **dict.fromkeys(("keyframe_stride", "keyframe_window"), "tokenflow"),
    **dict.fromkeys(("self_attn_steps", "cross_attn_steps", "store_layers", "blend_words"), "fatezero"),
    **dict.fromkeys(("mask_threshold", "store_limit_mb", "store", "store_dtype"), "fatezero"),
}
_SCHEMAS: dict[tuple, type] = {}


def edit_sections() -> dict[str, type]:
    """`edit.NAME` -> the settings dataclass the edit method registered as NAME declares (its own
    class attribute `settings`; methods without settings have no section)."""
    sections = {}
    for name in EDIT_METHODS.names():
        try:
            cls = EDIT_METHODS.get(name)
        except Exception as err:  # a broken plug-in: `edit.method=NAME` reports it when chosen
            log.warning(f"edit method {name!r} cannot be loaded: {first_line(err)}")
            continue
        settings = vars(cls).get("settings")
        if settings is None:
            continue
        if name in {f.name for f in fields(EditConfig)}:
            raise VidinvError(f"edit method {name!r}: its settings section would hide the key 'edit.{name}'")
        sections[name] = settings
    return sections


def edit_schema() -> type:
    """The edit section's dataclass: `EditConfig` with a field per method section (`edit_sections`)."""
    sections = edit_sections()
    key = tuple(sections.items())
    if key not in _SCHEMAS:
        _SCHEMAS[key] = make_dataclass(
            "EditConfig",
            [(name, settings, field(default_factory=settings)) for name, settings in sections.items()],
            bases=(EditConfig,),
            namespace={"__module__": __name__, "__doc__": EditConfig.__doc__},
        )
    return _SCHEMAS[key]


def valid_keys(node: Any = None, prefix: str = "") -> list[str]:
    """Every dotted key of the config (the defaults, method sections included), sections included."""
    node = Config() if node is None else node
    keys = []
    for f in fields(node):
        key = prefix + f.name
        keys.append(key)
        value = getattr(node, f.name)
        if is_dataclass(value):
            keys.extend(valid_keys(value, key + "."))
    return keys


def _nearest_key(key: str) -> str:
    candidates = valid_keys()
    leaf_matches = [k for k in candidates if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
    close = leaf_matches or difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)
    return close[0]


def _declared_type(key: str) -> str | None:
    """The annotation of a dotted key in the schema, as written (e.g. 'Optional[int]')."""
    node: Any = Config()
    for part in key.split("."):
        match = [f for f in fields(node) if f.name == part] if is_dataclass(node) else []
        if not match:
            return None
        value = getattr(node, part)
        node = value if is_dataclass(value) else match[0].type
    if is_dataclass(node):
        return type(node).__name__.replace("Config", " section").replace("Settings", " section")
    return str(node)


def moved_key(key: str) -> str:
    """`key`, or its place in a method's section when it is a flat edit key of the last release
    (`edit.inject_features` -> `edit.pnp.inject_features`), with a one-line note."""
    parts = key.split(".")
    if len(parts) >= 2 and parts[0] == "edit" and parts[1] in MOVED_EDIT_KEYS:
        new = ".".join(["edit", MOVED_EDIT_KEYS[parts[1]], *parts[1:]])
        log.warning(f"config: '{key}' is deprecated, use '{new}' (the old key goes in the next release)")
        return new
    return key


def in_sections(edit: dict) -> dict:
    """Edit-section values with method settings given flat (`inject_features: 0.5`) moved into their
    sections (`pnp: {inject_features: 0.5}`), merged with what those sections already hold."""
    edit = dict(edit)
    for name in [k for k in edit if k in MOVED_EDIT_KEYS]:
        section = MOVED_EDIT_KEYS[name]
        edit[section] = {**(edit.get(section) or {}), name: edit.pop(name)}
    return edit


def _moved_sections(values: Any) -> Any:
    """Nested config values with the last release's flat edit keys moved into their sections (a note each)."""
    if not isinstance(values, dict) or not isinstance(values.get("edit"), dict):
        return values
    for name in values["edit"]:
        moved_key(f"edit.{name}")
    return {**values, "edit": in_sections(values["edit"])}


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
    merged = OmegaConf.structured(Config())
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
        merged = _merge(merged, _moved_sections(OmegaConf.to_container(from_file)), str(path))
    given: dict[str, str] = {}
    for item in overrides or []:
        if "=" not in item:
            raise VidinvError(f"override {item!r} is not of the form key=value")
        key = item.split("=", 1)[0].strip().lstrip("+~")
        new_key = moved_key(key)
        item, key = item.replace(key, new_key, 1), new_key
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
    merged = _merge(OmegaConf.structured(Config()), OmegaConf.create(_moved_sections(values or {})), "config")
    config = OmegaConf.to_object(merged)
    validate(config)
    return config


def config_from_yaml(text: str) -> Config:
    """The Config of `to_yaml`'s text (how a Config is pickled)."""
    config = OmegaConf.to_object(_merge(OmegaConf.structured(Config()), OmegaConf.create(text), "config"))
    validate(config)
    return config


def config_with(config: Config, values: dict[str, Any], origin: str = "config") -> Config:
    """A validated copy of `config` with dotted `key: value` changes (any YAML-typed value, e.g. a
    prompt with commas or a list), checked like overrides: `origin` names where they came from."""
    merged = OmegaConf.structured(config)
    for key, value in values.items():
        try:
            OmegaConf.update(merged, moved_key(key), value, merge=False)
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


def require(condition: bool, key: str, value: Any, wanted: str) -> None:
    """A one-line VidinvError naming `key` when `condition` is false (the checks of `validate`)."""
    if not condition:
        raise VidinvError(f"config: '{key}' is {value!r}, expected {wanted}")


def require_fractions(section: Any, prefix: str, names: tuple[str, ...]) -> None:
    """Each of `names` in `section` a fraction in [0, 1]."""
    for name in names:
        value = getattr(section, name)
        require(0.0 <= value <= 1.0, f"{prefix}.{name}", value, "a fraction in [0, 1]")


def choices(config: Config | None = None) -> dict[str, tuple[str, ...]]:
    """Allowed values of every string option, method sections' included (`choices` of a settings class)."""
    config = Config() if config is None else config
    allowed = dict(CHOICES)
    for name in edit_sections():
        section = getattr(config.edit, name)
        for key, values in getattr(section, "choices", {}).items():
            allowed[f"edit.{name}.{key}"] = tuple(values)
    return allowed


def validate(config: Config) -> None:
    """Range and choice checks that the type system does not express."""
    for key, allowed in [*choices(config).items(), *((k, r.names()) for k, r in REGISTRIES.items())]:
        value = get_key(config, key)
        require(value in allowed, key, value, "one of " + ", ".join(allowed))
    v, inv, ed, rt, m = config.video, config.inversion, config.edit, config.runtime, config.model
    require(v.start >= 0, "video.start", v.start, "an integer >= 0")
    require(v.stride >= 1, "video.stride", v.stride, "an integer >= 1")
    require(v.num_frames is None or v.num_frames >= 1, "video.num_frames", v.num_frames, "null or an integer >= 1")
    for key in ("height", "width"):
        size = getattr(v, key)
        require(
            size is None or (8 <= size <= MAX_SIDE and size % 8 == 0),
            f"video.{key}",
            size,
            f"null or a multiple of 8 in 8..{MAX_SIDE}",
        )
    require(1 <= inv.steps <= 1000, "inversion.steps", inv.steps, "an integer in 1..1000")
    composes = not inv.freeinv or getattr(INVERSION_METHODS.get(inv.method), "composes_freeinv", False)
    require(
        composes, "inversion.freeinv", True, f"false with inversion.method: {inv.method} (rf_solver, fireflow take it)"
    )
    require(
        inv.guidance_scale is None or 0 <= inv.guidance_scale < math.inf,
        "inversion.guidance_scale",
        inv.guidance_scale,
        "null or a finite number >= 0",
    )
    require(0 <= ed.guidance_scale < math.inf, "edit.guidance_scale", ed.guidance_scale, "a finite number >= 0")
    for name in edit_sections():  # each method's own checks of its section
        section = getattr(ed, name)
        if hasattr(section, "check"):
            section.check(f"edit.{name}")
    require(
        ed.skip is None or 0 <= ed.skip < inv.steps, "edit.skip", ed.skip, f"null or an integer in 0..{inv.steps - 1}"
    )
    _validate_mask(ed)
    require(rt.vae_chunk >= 0, "runtime.vae_chunk", rt.vae_chunk, "an integer >= 0 (0 = whole clip)")
    require(rt.unet_chunk >= 0, "runtime.unet_chunk", rt.unet_chunk, "an integer >= 0 (0 = whole clip)")
    require(
        rt.window is None or rt.window >= 0, "runtime.window", rt.window, "null or an integer >= 0 (0 = whole clip)"
    )
    require(
        rt.window_overlap is None or (rt.window_overlap >= 0 and (not rt.window or rt.window_overlap < rt.window)),
        "runtime.window_overlap",
        rt.window_overlap,
        "null or an integer >= 0, below runtime.window" + (f" ({rt.window})" if rt.window else ""),
    )
    require(
        rt.checkpoint_seconds is None or rt.checkpoint_seconds >= 0,
        "runtime.checkpoint_seconds",
        rt.checkpoint_seconds,
        "null or a number of seconds >= 0",
    )
    require(
        rt.vae_tile_size >= 64 and rt.vae_tile_size % 64 == 0,
        "runtime.vae_tile_size",
        rt.vae_tile_size,
        "a multiple of 64",
    )
    require(rt.fps is None or 0 < rt.fps < math.inf, "runtime.fps", rt.fps, "null or a finite number > 0")
    require(bool(rt.output_dir), "runtime.output_dir", rt.output_dir, "a folder path")
    require(rt.record_dir is None or bool(rt.record_dir), "runtime.record_dir", rt.record_dir, "null or a folder path")
    require(rt.record_limit_mb >= 0, "runtime.record_limit_mb", rt.record_limit_mb, "an integer >= 0")
    require(m.keyframe_stride >= 1, "model.keyframe_stride", m.keyframe_stride, "an integer >= 1")
    require(m.attention_group >= 1, "model.attention_group", m.attention_group, "an integer >= 1")
    require(config.eval.clip is None or bool(config.eval.clip), "eval.clip", config.eval.clip, "null or a CLIP model")
    require(config.eval.mask is None or bool(config.eval.mask), "eval.mask", config.eval.mask, "null or a mask path")
    _validate_control(config)
    lora_specs(config.model.lora, check_files=True)


def _validate_mask(ed) -> None:
    """edit.mask / mask_words and their shaping (the file itself is read before loading: vidinv.editing.masks)."""
    require(ed.mask is None or bool(str(ed.mask).strip()), "edit.mask", ed.mask, "null or a mask file / folder")
    words = list(ed.mask_words)
    require(all(isinstance(w, str) and w.strip() for w in words), "edit.mask_words", words, "a list of words")
    require(ed.mask is None or not words, "edit.mask_words", words, "[] with edit.mask (one mask: a file or words)")
    threshold = ed.mask_words_threshold
    require(0.0 <= threshold < 1.0, "edit.mask_words_threshold", threshold, "a number in [0, 1)")
    require(ed.mask_dilate >= 0, "edit.mask_dilate", ed.mask_dilate, "an integer >= 0 (latent cells)")
    require(ed.mask_feather >= 0, "edit.mask_feather", ed.mask_feather, "an integer >= 0 (latent cells)")


def as_list(value) -> list:
    """A config value that may be one item or a list (model.controlnet, edit.control, ...) as a list."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass(frozen=True)
class LoraSpec:
    """One entry of `model.lora` (`lora_specs`)."""

    path: str  # the .safetensors file
    scale: float = 1.0  # its adapter's weight
    name: str = "lora_0"  # its adapter's name
    expert: str = "high"  # Wan 2.2 A14B: the transformer it loads into (high: `transformer`, low: `transformer_2`)


LORA_KEYS = ("path", "scale", "name", "expert")
LORA_EXPERTS = ("high", "low")


def lora_specs(value: Any, *, check_files: bool = False) -> list[LoraSpec]:
    """`model.lora` as a list of `LoraSpec`s: null, a path, a {path, scale, name, expert} mapping or a
    list of them; one-line errors naming the entry (`check_files`: each file must exist and be .safetensors)."""
    specs = []
    for i, item in enumerate(as_list(value)):
        key = "model.lora" if not isinstance(value, (list, tuple)) else f"model.lora[{i}]"
        entry = {"path": item} if isinstance(item, str) else item
        require(isinstance(entry, dict), key, item, "a .safetensors path or {path, scale, name, expert}")
        unknown = sorted(set(entry) - set(LORA_KEYS))
        require(not unknown, key, item, f"only the keys {', '.join(LORA_KEYS)} (not {', '.join(map(str, unknown))})")
        path, scale, name = entry.get("path"), entry.get("scale", 1.0), entry.get("name") or f"lora_{i}"
        require(isinstance(path, str) and bool(path.strip()), f"{key}.path", path, "a .safetensors file")
        number = isinstance(scale, (int, float)) and not isinstance(scale, bool)
        require(number and math.isfinite(scale), f"{key}.scale", scale, "a finite number")
        require(isinstance(name, str) and "." not in name, f"{key}.name", name, "an adapter name without dots")
        expert = entry.get("expert", "high")
        require(expert in LORA_EXPERTS, f"{key}.expert", expert, " or ".join(LORA_EXPERTS))
        if check_files:
            found = Path(path).expanduser()
            require(found.is_file(), f"{key}.path", path, "an existing .safetensors file (it does not exist)")
            require(found.suffix == ".safetensors", f"{key}.path", path, "a .safetensors file")
        specs.append(LoraSpec(path, float(scale), name, expert))
    names = [spec.name for spec in specs]
    require(len(set(names)) == len(names), "model.lora", names, "a different name for each LoRA")
    return specs


def _validate_control(config: Config) -> None:
    """model.controlnet, edit.control and edit.controlnet_scale: one value, or one per ControlNet."""
    nets, kinds, scales = (
        as_list(v) for v in (config.model.controlnet, config.edit.control, config.edit.controlnet_scale)
    )
    require(all(isinstance(n, str) and n for n in nets), "model.controlnet", nets, "null, a source or a list of them")
    wanted = f"one of {', '.join(CONTROL_KINDS)} per ControlNet ({len(nets)})"
    require(len(kinds) == len(nets) and set(kinds) <= set(CONTROL_KINDS), "edit.control", kinds, wanted)
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in scales)
    require(
        numbers and len(scales) in (1, max(len(nets), 1)),
        "edit.controlnet_scale",
        scales,
        "a number >= 0 or one per ControlNet",
    )
    require(not config.inversion.control or nets, "inversion.control", True, "false without model.controlnet")


def to_yaml(config: Config) -> str:
    """The resolved config as YAML; `load_config` of this text gives the same Config."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
