"""Rectified-flow models (SD3, Flux frame models; Wan 2.1 video model): detection, loading, prompt
conditions and one transformer call.

    family = flow_family_of("stabilityai/stable-diffusion-3-medium-diffusers")   # "sd3" | "flux" | None
    models = load_models(source, dtype="fp32", device="cpu")                   # a PipelineModels (vidinv.models)
    cond = flow_condition(models, ["", "a cat"], guidance=4.0)                  # the prompt rows
    v = models.call(models.transformer, x, t, cond)                            # x ((b f) c h w) -> velocity
                                                    # Wan (models.video): x (b f c h w), the whole clip

A model is held as its diffusers pipeline (`StableDiffusion3Pipeline`, `FluxPipeline`): its
`encode_prompt` makes the text conditions exactly as diffusers does, its components are the
model's. SD3 loads without T5 when the source has none (`text_encoder_3=None`, diffusers'
documented memory-saving way; the T5 rows are then zeros). `PipelineModels` is a `vidinv.models.ModelBundle`
as `vidinv.models.Models` is (`denoiser` is the transformer, `vae`, `scheduler`, `family` its record
of `vidinv.models.families`, whose adapter calls the transformer and encodes the prompts).
Detection reads the source's `model_index.json` only (no weights); `tiny-sd3` / `tiny-flux` /
`tiny-wan` are the built-in random-weight models (`vidinv.models.tiny_flow`).

Wan 2.1 is a native video model: its transformer attends over the whole latent video (f c h w,
f = (frames - 1) / 4 + 1 latent frames of its causal VAE), so it is called on every frame at once.
Its pipelines ship UniPC with flow sigmas; vidinv steps the same shifted flow grid with Euler
(`FlowMatchEulerDiscreteScheduler` with the UniPC config's `flow_shift`), the step the inversion
reverses. Its VAE stays in fp32 (as diffusers' Wan examples load it).

CogVideoX, a video DiT trained as a DDPM (v-prediction on CogVideoXDDIMScheduler's DDIM grid), is held
the same way (its pipeline, its adapter `vidinv.models.cogvideox`), but keeps its scheduler, and its
`prediction_type` is the scheduler's: the DDPM-grid samplers step it.

A single file (.safetensors / .ckpt) is a transformer in its original layout (Stability's SD3 MMDiT,
e.g. sd3_medium.safetensors; BFL's Flux, e.g. flux1-dev.safetensors), recognised from its keys as
diffusers infers them: its transformer, and its VAE when it holds one, are converted by diffusers'
`from_single_file`; the other components come from `model.single_file_config` (a diffusers folder,
read offline, or a hub id).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidinv.errors import VidinvError, first_line
from vidinv.models.families import FAMILIES, Family, family_record
from vidinv.models.flow_adapters import FlowCondition
from vidinv.models.paths import SINGLE_FILE_SUFFIXES, looks_like_path

# their records (vidinv.models.families): the families held as their diffusers pipeline and called
# through their adapter, the flow transformers and CogVideoX (a DDPM video DiT)
FLOW_FAMILIES = [f for f in FAMILIES.values() if f.adapter is not None]
# the records by what names them: model_index.json's _class_name, the built-in tiny names, and
# diffusers' model types (infer_diffusers_model_type) of the single files vidinv loads
PIPELINES = {f.pipeline: f.name for f in FLOW_FAMILIES if not f.index_marks}  # a pipeline's default family
TINY_FLOW = {tiny: f.name for f in FLOW_FAMILIES for tiny in f.tiny_names}
FILE_TYPES = {kind: f.name for f in FLOW_FAMILIES for kind in f.single_file_types}
FLUX1_WIDTH = 3072  # diffusers' Flux conversion splits the single blocks' fused q, k, v, MLP at this width
TEXT_ENCODER_PREFIX = "text_encoders."  # SD3 files with their CLIP / T5 towers (sd3_medium_incl_clips*)
log = logging.getLogger("vidinv")


def flow_family_of(pretrained: str, single_file_config: str | None = None) -> str | None:
    """`sd3` / `flux` / `wan` when `pretrained` is a flow model: a built-in tiny name, a folder / hub
    id whose model_index.json names StableDiffusion3Pipeline / FluxPipeline / WanPipeline, or a single
    file of an SD3 / Flux transformer (`flow_family_of_file`); None otherwise."""
    if pretrained in TINY_FLOW:
        return TINY_FLOW[pretrained]
    if pretrained.endswith(SINGLE_FILE_SUFFIXES):
        return flow_family_of_file(pretrained, single_file_config)
    return family_of_index(pipeline_index(pretrained) or {})


def _marked(value) -> bool:
    """Whether a model_index.json value is set: not null / false, nor a component [null, null]."""
    return value not in (None, False) and not (isinstance(value, list) and all(v is None for v in value))


def family_of_index(index: dict) -> str | None:
    """The flow family of a model_index.json: its pipeline's, among families sharing the pipeline
    the one whose `Family.index_marks` the index sets (Wan 2.2), else the unmarked one (Wan 2.1)."""
    shared = [f for f in FLOW_FAMILIES if f.pipeline == index.get("_class_name")]
    marked = [f for f in shared if any(_marked(index.get(key)) for key in f.index_marks)]
    chosen = marked or [f for f in shared if not f.index_marks]
    return chosen[0].name if chosen else None


def pipeline_index(source: str) -> dict | None:
    """The model_index.json of a folder or hub id (cache or hub, no weights); None without one. A hub
    down and the id not cached: a one-line error."""
    index = Path(source) / "model_index.json"
    if index.is_file():
        return json.loads(index.read_text(encoding="utf-8"))
    if Path(source).exists() or source.endswith(SINGLE_FILE_SUFFIXES) or source.count("/") != 1:
        return None
    from vidinv.models.hub import hub_local_only

    local_only = hub_local_only(source)  # one line, in seconds
    try:
        from diffusers import DiffusionPipeline

        return dict(DiffusionPipeline.load_config(source, local_files_only=local_only))
    except Exception:  # not found / not a pipeline: the loaders report it
        return None


def pipeline_name(source: str) -> str | None:
    """The `_class_name` in the model_index.json of a folder or hub id (`pipeline_index`)."""
    return (pipeline_index(source) or {}).get("_class_name")


def flow_type_of_checkpoint(path: str) -> str | None:
    """`sd3` / `flux` when a single file holds an SD3 / Flux transformer in its original layout, by
    diffusers' model type of its keys (FILE_TYPES); diffusers' SD3 rule also checks the published
    widths, so SD3's marker keys alone stand for smaller ones (the tiny test models). None otherwise."""
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES, infer_diffusers_model_type

    from vidinv.models.family import checkpoint_shapes

    try:
        shapes = checkpoint_shapes(path)
    except Exception:  # corrupt or foreign files: the SD loader reports them
        return None
    try:
        model_type = infer_diffusers_model_type(shapes)
    except Exception:  # its SD3 rule fails on position embeddings of sizes it does not know
        model_type = None
    if model_type in FILE_TYPES:
        return FILE_TYPES[model_type]
    markers = CHECKPOINT_KEY_NAMES["sd3"]  # a list (one key in older diffusers)
    marked = any(key in shapes for key in ([markers] if isinstance(markers, str) else markers))
    return "sd3" if marked and model_type in (None, "v1") else None  # "v1": its answer for unknown keys


def flow_family_of_file(path: str, config: str | None) -> str | None:
    """The family of a single file's transformer (`flow_type_of_checkpoint`), which must be the one
    of single_file_config's pipeline when that names one; None for other files (the SD loader's).
    A flow config with a file that holds no such transformer: a one-line error naming the file."""
    if not Path(path).is_file():
        return None  # the SD loader says it does not exist
    family = flow_type_of_checkpoint(path)
    try:
        named = pipeline_name(config) if config else None
    except VidinvError:  # a hub id the hub cannot give: the loaders say so in their words
        named = None
    wanted = FAMILIES.get(PIPELINES.get(named or ""))
    if family is not None and named is not None and (wanted is None or wanted.name != family):
        raise VidinvError(
            f"model.single_file_config: {config} is a {named},"
            f" but {path} holds an original-layout {FAMILIES[family].display} transformer"
        )
    if family is None and wanted is not None and wanted.single_file_types:
        raise VidinvError(f"model.pretrained: {path} is no {wanted.display} transformer file (original layout)")
    if family is None and wanted is not None:
        files = " / ".join(f.display for f in FLOW_FAMILIES if f.single_file_types)
        raise VidinvError(f"model.pretrained: {path}: vidinv loads single files of {files}, not {wanted.display}")
    return family


@dataclass
class PipelineModels:
    """A diffusers pipeline's components on one device and dtype, for the families held as their
    pipeline and called through their adapter (`Family.adapter`): the flow transformers (SD3, Flux,
    Wan, LTX-Video, HunyuanVideo) and CogVideoX, a DDPM one (module docstring)."""

    pipeline: object
    family: Family  # its record (vidinv.models.families); a name is read as its record
    device: torch.device
    dtype: torch.dtype
    source: str
    max_sequence_length: int
    prediction_type: str = field(default="flow", init=False)
    offload: str = field(default="none", init=False)  # runtime.offload applied (vidinv.models.offload)
    loras: list = field(default_factory=list, init=False)  # model.lora applied (vidinv.models.lora)
    windows: object = field(default=None, init=False)  # runtime.window applied (vidinv.attention.windows)

    def __post_init__(self):
        self.family = family_record(self.family)
        if not self.family.flow:  # a DDPM transformer (CogVideoX): its scheduler's parametrisation (v)
            self.prediction_type = self.pipeline.scheduler.config.get("prediction_type", "epsilon")

    @property
    def video(self) -> bool:
        """A native video model (Wan): called on the whole latent clip, no frame attention of vidinv's."""
        return self.family.video

    @property
    def transformer(self):
        return self.pipeline.transformer

    @property
    def denoiser(self):
        """The denoiser: the transformer (`vidinv.models.ModelBundle`)."""
        return self.pipeline.transformer

    @property
    def vae(self):
        return self.pipeline.vae

    @property
    def scheduler(self):
        return self.pipeline.scheduler

    @property
    def text_encoder(self):
        return self.pipeline.text_encoder

    @property
    def tokenizer(self):
        return self.pipeline.tokenizer

    @property
    def boundary_timestep(self) -> float | None:
        """Wan 2.2 A14B: the timestep below which the low-noise expert (`transformer_2`) runs, as
        WanPipeline sets it (boundary_ratio x the scheduler's training steps); None with one transformer."""
        ratio = self.pipeline.config.get("boundary_ratio") if hasattr(self.pipeline, "config") else None
        if ratio is None or getattr(self.pipeline, "transformer_2", None) is None:
            return None
        return float(ratio) * self.scheduler.config.num_train_timesteps

    def expert(self, transformer, t):
        """The transformer that runs at timestep t: `transformer`, or Wan 2.2 A14B's low-noise expert
        in its place below the boundary (WanPipeline's rule: the high-noise one at t >= boundary)."""
        boundary = self.boundary_timestep
        if boundary is None or transformer is not self.pipeline.transformer or float(t) >= boundary:
            return transformer
        return self.pipeline.transformer_2

    @property
    def per_token_timesteps(self) -> bool:
        """Wan 2.2 TI2V: the timestep given per token (WanPipeline's `expand_timesteps`)."""
        return bool(getattr(self.pipeline, "config", {}).get("expand_timesteps", False))

    def call(self, transformer, x: torch.Tensor, t, cond: FlowCondition) -> torch.Tensor:
        """The velocity of the expert for t (`expert`), t per token where the pipeline gives it so."""
        transformer = self.expert(transformer, t)
        if self.per_token_timesteps:
            t = token_timesteps(transformer, x, t)
        return self.family.adapter.call(transformer, x, t, cond)

    def save_pretrained(self, folder: str | Path) -> None:
        self.pipeline.save_pretrained(folder)


FlowModels = PipelineModels  # its earlier name, kept for code that imports it


def _pipeline_class(family: Family):
    import diffusers

    return getattr(diffusers, family.pipeline)


def _t5_options(pretrained: str, family: Family, t5: bool) -> dict:
    """SD3 loads without T5 (text_encoder_3 = tokenizer_3 = None) when `model.t5` is false or the
    source holds none (`Family.t5_optional`); Flux, Wan cannot (their text sequence is T5's): a
    one-line error."""
    if not family.t5_optional:
        if not t5:
            can = " / ".join(f.display for f in FLOW_FAMILIES if f.t5_optional)
            sequence = [name for name in family.text_encoders if not name.startswith("CLIP")]  # its text sequence's
            encoder = sequence[0].removesuffix("EncoderModel").removesuffix("Model")  # T5, UMT5, Llama
            raise VidinvError(
                f"model.t5: {family.display} encodes its prompts with {encoder} and cannot drop it ({can} can)"
            )
        return {}
    index = Path(pretrained) / "model_index.json"
    absent = index.is_file() and json.loads(index.read_text(encoding="utf-8")).get("text_encoder_3", [None])[0] is None
    return {"text_encoder_3": None, "tokenizer_3": None} if absent or not t5 else {}


def load_flow_pipeline(pretrained: str, family: Family | str, dtype: torch.dtype, *, t5: bool = True, config=None):
    """The diffusers pipeline of a flow model: a built-in tiny one, a folder, a hub id or a single
    file (`config`: its single_file_config); `t5` false: SD3 without its T5 encoder (diffusers'
    documented memory-saving way)."""
    family = family_record(family)
    if pretrained.endswith(SINGLE_FILE_SUFFIXES):
        return load_flow_single_file(pretrained, family, dtype, config, t5=t5)
    extra = _t5_options(pretrained, family, t5)
    if pretrained in family.tiny_names:
        from vidinv.models.tiny_flow import tiny_flow_pipeline

        return tiny_flow_pipeline(pretrained)
    if not Path(pretrained).is_dir():  # a hub id: from the cache when the hub is down (its note given once)
        from vidinv.models.hub import hub_local_only

        extra["local_files_only"] = hub_local_only(pretrained)
    try:
        return _pipeline_class(family).from_pretrained(pretrained, torch_dtype=dtype, **extra)
    except (OSError, ValueError) as err:
        where = "folder" if Path(pretrained).is_dir() else "hub id (needs network or a filled cache)"
        raise VidinvError(f"model.pretrained: cannot load {where} {pretrained!r}: {first_line(err)}") from err


def _config_offline(path: str, family: Family, config: str | None) -> bool:
    """Whether single_file_config is read offline (a local folder, checked; a cached hub id when the
    hub is down); a one-line error when it is not set."""
    from vidinv.models.hub import hub_local_only
    from vidinv.models.single_file import check_config_folder

    if config is None:
        raise VidinvError(
            f"model.single_file_config: {path} holds an original-layout {family.display} transformer;"
            f" name the diffusers folder or hub id holding the other components (e.g. {family.published})"
        )
    if looks_like_path(config):
        check_config_folder(config)
        return True
    return hub_local_only(config, key="model.single_file_config")


def holds_vae(shapes: dict) -> bool:
    """Whether a single file's keys hold a VAE (under diffusers' LDM VAE prefixes)."""
    from diffusers.loaders.single_file_utils import LDM_VAE_KEYS

    return any(key.startswith(tuple(LDM_VAE_KEYS)) for key in shapes)


def _width_hint(family: Family, shapes: dict) -> str:
    """Why diffusers cannot convert a Flux transformer of another width than Flux.1's."""
    img_in = shapes.get("img_in.weight", shapes.get("model.diffusion_model.img_in.weight"))
    if family.name != "flux" or img_in is None or img_in.shape[0] == FLUX1_WIDTH:
        return ""
    return f" (diffusers converts Flux transformers of width {FLUX1_WIDTH}, Flux.1's; this one's is {img_in.shape[0]})"


def load_flow_single_file(path: str, family: Family | str, dtype: torch.dtype, config: str | None, *, t5: bool = True):
    """A flow pipeline from one original-layout file (module docstring): its transformer, and its VAE
    when it holds one, by diffusers' `from_single_file`; the other components from `config`."""
    import diffusers
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    from vidinv.models.family import checkpoint_shapes
    from vidinv.models.single_file import hub_hint

    family = family_record(family)
    local = _config_offline(path, family, config)
    extra = _t5_options(config, family, t5)
    shapes = checkpoint_shapes(path)
    if any(key.startswith(TEXT_ENCODER_PREFIX) for key in shapes):
        log.warning("note: the text encoders in %s are not read; single_file_config's are used", path)
    options = {"config": config, "torch_dtype": dtype, "local_files_only": local}
    transformer = getattr(diffusers, family.denoiser)
    try:
        parts = {"transformer": transformer.from_single_file(path, subfolder="transformer", **options)}
        if holds_vae(shapes):
            vae = getattr(diffusers, family.vae)  # AutoencoderKL (SD3), AutoencoderKLLTXVideo (LTX-Video's files)
            parts["vae"] = vae.from_single_file(path, subfolder="vae", **options)
        return _pipeline_class(family).from_pretrained(
            config, torch_dtype=dtype, local_files_only=local, **parts, **extra
        )
    except (OSError, ValueError, KeyError, RuntimeError, SingleFileComponentError) as err:
        hint = _width_hint(family, shapes) + hub_hint(err, config)
        raise VidinvError(f"model.pretrained: cannot load checkpoint {path}: {first_line(err)}{hint}") from err


def component_dtype(family: Family | str, name: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype a component runs in: the model's, except a VAE the family keeps in fp32 (Wan's
    causal VAE: its caches and 3D convolutions drift in half precision)."""
    return torch.float32 if family_record(family).vae_fp32 and name == "vae" else dtype


def load_flow_models(
    pretrained: str,
    family: Family | str,
    *,
    dtype: torch.dtype,
    device: torch.device,
    prepare,
    t5: bool = True,
    single_file_config: str | None = None,
) -> PipelineModels:
    """The flow pipeline's modules cast, placed and frozen by `prepare(module, dtype)` (on `device`,
    the execution device, unless the caller offloads them from the CPU)."""
    family = family_record(family)
    pipeline = load_flow_pipeline(pretrained, family, dtype, t5=t5, config=single_file_config)
    for name, module in pipeline.components.items():
        if isinstance(module, torch.nn.Module):
            setattr(pipeline, name, prepare(module, component_dtype(family, name, dtype)))
    if family.shift == "flow_shift":  # Wan: UniPC's flow grid, stepped by Euler
        pipeline.scheduler = euler_flow_scheduler(pipeline.scheduler)
    if pretrained in family.tiny_names:
        from vidinv.models.tiny_configs import T5_TOKENS

        tokens = T5_TOKENS
    else:
        tokens = family.t5_tokens
    return PipelineModels(pipeline, family, device, dtype, pretrained, tokens)


def token_timesteps(transformer, x: torch.Tensor, t) -> torch.Tensor:
    """t for every token of a video x (b f c h w) as WanPipeline's `expand_timesteps` gives it:
    (b, f (h / p) (w / p)) float32, p the transformer's spatial patch."""
    _, ph, pw = transformer.config.patch_size
    b, f, _, h, w = x.shape
    return torch.full((b, f * (h // ph) * (w // pw)), float(t), dtype=torch.float32, device=x.device)


def euler_flow_scheduler(scheduler):
    """A FlowMatchEulerDiscreteScheduler on the flow grid of `scheduler`: itself, or the one of a
    UniPC scheduler with flow sigmas (Wan's pipelines: shift = its `flow_shift`)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return scheduler
    config = scheduler.config
    if not config.get("use_flow_sigmas", False):
        raise VidinvError(f"model.pretrained: the scheduler {type(scheduler).__name__} has no flow-matching sigma grid")
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=config.num_train_timesteps, shift=float(config.get("flow_shift", 1.0))
    )


@torch.no_grad()
def flow_condition(models: PipelineModels, prompts: list[str], guidance: float | None = None) -> FlowCondition:
    """The text conditions of `prompts` (one row each) from the pipeline's own `encode_prompt`;
    `guidance` is Flux's embedded guidance (`Family.guidance_embedded`; unused by the others)."""
    cond = models.family.adapter.encode(
        models.pipeline, prompts, device=models.device, tokens=models.max_sequence_length, guidance=guidance
    )
    cast = lambda x: None if x is None else x.to(models.dtype)  # noqa: E731
    return FlowCondition(cast(cond.embeds), cast(cond.pooled), cond.text_ids, cond.guidance, cond.mask)
