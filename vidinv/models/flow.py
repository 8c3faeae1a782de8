"""Rectified-flow models (SD3, Flux frame models; Wan 2.1 video model): detection, loading, prompt
conditions and one transformer call.

    family = flow_family_of("stabilityai/stable-diffusion-3-medium-diffusers")   # "sd3" | "flux" | None
    models = load_models(source, dtype="fp32", device="cpu")                   # a FlowModels (vidinv.models)
    cond = flow_condition(models, ["", "a cat"], guidance=4.0)                  # the prompt rows
    v = models.call(models.transformer, x, t, cond)                            # x ((b f) c h w) -> velocity
                                                    # Wan (models.video): x (b f c h w), the whole clip

A model is held as its diffusers pipeline (`StableDiffusion3Pipeline`, `FluxPipeline`): its
`encode_prompt` makes the text conditions exactly as diffusers does, its components are the
model's. SD3 loads without T5 when the source has none (`text_encoder_3=None`, diffusers'
documented memory-saving way; the T5 rows are then zeros). `FlowModels` offers the attributes the
engine reads from `vidinv.models.Models` (`unet` is the transformer, `vae`, `scheduler`, ...).
Detection reads the source's `model_index.json` only (no weights); `tiny-sd3` / `tiny-flux` /
`tiny-wan` are the built-in random-weight models (`vidinv.models.tiny_flow`).

Wan 2.1 is a native video model: its transformer attends over the whole latent video (f c h w,
f = (frames - 1) / 4 + 1 latent frames of its causal VAE), so it is called on every frame at once.
Its pipelines ship UniPC with flow sigmas; vidinv steps the same shifted flow grid with Euler
(`FlowMatchEulerDiscreteScheduler` with the UniPC config's `flow_shift`), the step the inversion
reverses. Its VAE stays in fp32 (as diffusers' Wan examples load it).

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
from einops import rearrange, repeat

from vidinv.errors import VidinvError, first_line
from vidinv.models.paths import SINGLE_FILE_SUFFIXES, looks_like_path

PIPELINES = {"StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux", "WanPipeline": "wan"}
TINY_FLOW = {"tiny-sd3": "sd3", "tiny-flux": "flux", "tiny-wan": "wan"}
MAX_SEQUENCE_LENGTH = {"sd3": 256, "flux": 512, "wan": 512}  # the pipelines' T5 token defaults
VIDEO_FAMILIES = ("wan",)  # native video models: the transformer sees the whole latent clip
NAMES = {"sd3": "SD3", "flux": "Flux", "wan": "Wan"}
TRANSFORMERS = {"sd3": "SD3Transformer2DModel", "flux": "FluxTransformer2DModel"}  # the single-file families
PUBLISHED = {"sd3": "stabilityai/stable-diffusion-3-medium-diffusers", "flux": "black-forest-labs/FLUX.1-dev"}
# diffusers' model types (infer_diffusers_model_type) of the single files vidinv loads
FILE_TYPES = {"sd3": "sd3", "sd35_medium": "sd3", "sd35_large": "sd3", "flux-dev": "flux", "flux-schnell": "flux"}
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
    return PIPELINES.get(pipeline_name(pretrained) or "")


def pipeline_name(source: str) -> str | None:
    """The `_class_name` in the model_index.json of a folder or hub id (cache or hub, no weights);
    None without one. A hub down and the id not cached: a one-line error."""
    index = Path(source) / "model_index.json"
    if index.is_file():
        return json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    if Path(source).exists() or source.endswith(SINGLE_FILE_SUFFIXES) or source.count("/") != 1:
        return None
    from vidinv.models.hub import hub_local_only

    local_only = hub_local_only(source)  # one line, in seconds
    try:
        from diffusers import DiffusionPipeline

        return DiffusionPipeline.load_config(source, local_files_only=local_only).get("_class_name")
    except Exception:  # not found / not a pipeline: the loaders report it
        return None


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
    wanted = PIPELINES.get(named or "")
    if family is not None and named is not None and wanted != family:
        raise VidinvError(
            f"model.single_file_config: {config} is a {named},"
            f" but {path} holds an original-layout {NAMES[family]} transformer"
        )
    if family is None and wanted in TRANSFORMERS:
        raise VidinvError(f"model.pretrained: {path} is no {NAMES[wanted]} transformer file (original layout)")
    if family is None and wanted is not None:
        raise VidinvError(f"model.pretrained: {path}: vidinv loads single files of SD3 / Flux, not {NAMES[wanted]}")
    return family


@dataclass
class FlowCondition:
    """The text conditions of b prompt rows: embeds (b l d), pooled (b d) (None for Wan); Flux: text
    ids (l 3) and the embedded guidance (b) of its guidance-distilled transformer (None without)."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None
    text_ids: torch.Tensor | None = None
    guidance: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return self.embeds.shape[0]

    def __len__(self) -> int:
        return self.rows

    def to(self, device) -> FlowCondition:
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return FlowCondition(move(self.embeds), move(self.pooled), move(self.text_ids), move(self.guidance))

    def per_frame(self, frames: int) -> FlowCondition:
        """The rows repeated for `frames` frames each: (b l d) -> ((b f) l d)."""
        return FlowCondition(
            repeat(self.embeds, "b l d -> (b f) l d", f=frames),
            None if self.pooled is None else repeat(self.pooled, "b d -> (b f) d", f=frames),
            self.text_ids,
            None if self.guidance is None else repeat(self.guidance, "b -> (b f)", f=frames),
        )

    @staticmethod
    def cat(conditions: list[FlowCondition]) -> FlowCondition:
        """The rows of several conditions of one model, in order."""
        first = conditions[0]
        guidance = None if first.guidance is None else torch.cat([c.guidance for c in conditions])
        return FlowCondition(
            torch.cat([c.embeds for c in conditions]),
            None if first.pooled is None else torch.cat([c.pooled for c in conditions]),
            first.text_ids,
            guidance,
        )


def call_sd3(transformer, x: torch.Tensor, t, cond: FlowCondition) -> torch.Tensor:
    """SD3's velocity for latents x (B c h w) at timestep t (0..1000), as its pipeline calls it: the
    timestep in fp32 whatever the model's dtype (in fp16 the 50-step shift-3 grid was off by up to 0.23)."""
    timestep = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(x.shape[0])
    return transformer(
        hidden_states=x,
        timestep=timestep,
        encoder_hidden_states=cond.embeds,
        pooled_projections=cond.pooled,
        return_dict=False,
    )[0]


def call_flux(transformer, x: torch.Tensor, t, cond: FlowCondition) -> torch.Tensor:
    """Flux's velocity for latents x (B c h w): 2x2-packed tokens, image ids, timestep / 1000 and
    the embedded guidance, as FluxPipeline calls it."""
    from diffusers import FluxPipeline

    b, _, h, w = x.shape
    tokens = rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", p=2, q=2)
    image_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x.device, x.dtype)
    timestep = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(b) / 1000
    guidance = None
    if transformer.config.guidance_embeds:
        guidance = cond.guidance.to(device=x.device, dtype=torch.float32)
    out = transformer(
        hidden_states=tokens,
        timestep=timestep,
        guidance=guidance,
        pooled_projections=cond.pooled,
        encoder_hidden_states=cond.embeds,
        txt_ids=cond.text_ids,
        img_ids=image_ids,
        return_dict=False,
    )[0]
    return rearrange(out, "b (h w) (c p q) -> b c (h p) (w q)", h=h // 2, p=2, q=2)


def call_wan(transformer, x: torch.Tensor, t, cond: FlowCondition) -> torch.Tensor:
    """Wan's velocity for a whole latent clip x (b f c h w) at timestep t (0..1000), as WanPipeline
    calls it (the transformer reads the clip as (b c f h w))."""
    timestep = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(x.shape[0])
    out = transformer(
        hidden_states=rearrange(x, "b f c h w -> b c f h w"),
        timestep=timestep,
        encoder_hidden_states=cond.embeds,
        return_dict=False,
    )[0]
    return rearrange(out, "b c f h w -> b f c h w")


CALLS = {"sd3": call_sd3, "flux": call_flux, "wan": call_wan}


@dataclass
class FlowModels:
    """A flow pipeline's components on one device and dtype (module docstring)."""

    pipeline: object
    family: str  # sd3 | flux
    device: torch.device
    dtype: torch.dtype
    source: str
    max_sequence_length: int
    prediction_type: str = field(default="flow", init=False)
    offload: str = field(default="none", init=False)  # runtime.offload applied (vidinv.models.offload)

    @property
    def video(self) -> bool:
        """A native video model (Wan): called on the whole latent clip, no frame attention of vidinv's."""
        return self.family in VIDEO_FAMILIES

    @property
    def transformer(self):
        return self.pipeline.transformer

    @property
    def unet(self):
        """The denoiser (the engine's name for it): the transformer."""
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

    def call(self, transformer, x: torch.Tensor, t, cond: FlowCondition) -> torch.Tensor:
        return CALLS[self.family](transformer, x, t, cond)

    def save_pretrained(self, folder: str | Path) -> None:
        self.pipeline.save_pretrained(folder)


def _pipeline_class(family: str):
    import diffusers

    name = {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline", "wan": "WanPipeline"}[family]
    return getattr(diffusers, name)


def _t5_options(pretrained: str, family: str, t5: bool) -> dict:
    """SD3 loads without T5 (text_encoder_3 = tokenizer_3 = None) when `model.t5` is false or the
    source holds none; Flux cannot (its text sequence is T5's): a one-line error."""
    if family in ("flux", "wan"):
        if not t5:
            name = "Flux" if family == "flux" else "Wan"
            raise VidinvError(f"model.t5: {name} encodes its prompts with T5 and cannot drop it (SD3 can)")
        return {}
    index = Path(pretrained) / "model_index.json"
    absent = index.is_file() and json.loads(index.read_text(encoding="utf-8")).get("text_encoder_3", [None])[0] is None
    return {"text_encoder_3": None, "tokenizer_3": None} if absent or not t5 else {}


def load_flow_pipeline(pretrained: str, family: str, dtype: torch.dtype, *, t5: bool = True, config=None):
    """The diffusers pipeline of a flow model: a built-in tiny one, a folder, a hub id or a single
    file (`config`: its single_file_config); `t5` false: SD3 without its T5 encoder (diffusers'
    documented memory-saving way)."""
    if pretrained.endswith(SINGLE_FILE_SUFFIXES):
        return load_flow_single_file(pretrained, family, dtype, config, t5=t5)
    extra = _t5_options(pretrained, family, t5)
    if pretrained in TINY_FLOW:
        from vidinv.models.tiny_flow import tiny_flow_pipeline

        return tiny_flow_pipeline(pretrained)
    try:
        return _pipeline_class(family).from_pretrained(pretrained, torch_dtype=dtype, **extra)
    except (OSError, ValueError) as err:
        where = "folder" if Path(pretrained).is_dir() else "hub id (needs network or a filled cache)"
        raise VidinvError(f"model.pretrained: cannot load {where} {pretrained!r}: {first_line(err)}") from err


def _config_offline(path: str, family: str, config: str | None) -> bool:
    """Whether single_file_config is read offline (a local folder, checked; a cached hub id when the
    hub is down); a one-line error when it is not set."""
    from vidinv.models.hub import hub_local_only
    from vidinv.models.single_file import check_config_folder

    if config is None:
        raise VidinvError(
            f"model.single_file_config: {path} holds an original-layout {NAMES[family]} transformer;"
            f" name the diffusers folder or hub id holding the other components (e.g. {PUBLISHED[family]})"
        )
    if looks_like_path(config):
        check_config_folder(config)
        return True
    return hub_local_only(config, key="model.single_file_config")


def holds_vae(shapes: dict) -> bool:
    """Whether a single file's keys hold a VAE (under diffusers' LDM VAE prefixes)."""
    from diffusers.loaders.single_file_utils import LDM_VAE_KEYS

    return any(key.startswith(tuple(LDM_VAE_KEYS)) for key in shapes)


def _width_hint(family: str, shapes: dict) -> str:
    """Why diffusers cannot convert a Flux transformer of another width than Flux.1's."""
    img_in = shapes.get("img_in.weight", shapes.get("model.diffusion_model.img_in.weight"))
    if family != "flux" or img_in is None or img_in.shape[0] == FLUX1_WIDTH:
        return ""
    return f" (diffusers converts Flux transformers of width {FLUX1_WIDTH}, Flux.1's; this one's is {img_in.shape[0]})"


def load_flow_single_file(path: str, family: str, dtype: torch.dtype, config: str | None, *, t5: bool = True):
    """A flow pipeline from one original-layout file (module docstring): its transformer, and its VAE
    when it holds one, by diffusers' `from_single_file`; the other components from `config`."""
    import diffusers
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    from vidinv.models.family import checkpoint_shapes
    from vidinv.models.single_file import hub_hint

    local = _config_offline(path, family, config)
    extra = _t5_options(config, family, t5)
    shapes = checkpoint_shapes(path)
    if any(key.startswith(TEXT_ENCODER_PREFIX) for key in shapes):
        log.warning("note: the text encoders in %s are not read; single_file_config's are used", path)
    options = {"config": config, "torch_dtype": dtype, "local_files_only": local}
    transformer = getattr(diffusers, TRANSFORMERS[family])
    try:
        parts = {"transformer": transformer.from_single_file(path, subfolder="transformer", **options)}
        if holds_vae(shapes):
            parts["vae"] = diffusers.AutoencoderKL.from_single_file(path, subfolder="vae", **options)
        return _pipeline_class(family).from_pretrained(
            config, torch_dtype=dtype, local_files_only=local, **parts, **extra
        )
    except (OSError, ValueError, KeyError, RuntimeError, SingleFileComponentError) as err:
        hint = _width_hint(family, shapes) + hub_hint(err, config)
        raise VidinvError(f"model.pretrained: cannot load checkpoint {path}: {first_line(err)}{hint}") from err


def component_dtype(family: str, name: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype a component runs in: the model's, except a video model's causal VAE (fp32: its
    caches and 3D convolutions drift in half precision)."""
    return torch.float32 if family in VIDEO_FAMILIES and name == "vae" else dtype


def load_flow_models(
    pretrained: str,
    family: str,
    *,
    dtype: torch.dtype,
    device: torch.device,
    prepare,
    t5: bool = True,
    single_file_config: str | None = None,
) -> FlowModels:
    """The flow pipeline's modules cast, placed and frozen by `prepare(module, dtype)` (on `device`,
    the execution device, unless the caller offloads them from the CPU)."""
    pipeline = load_flow_pipeline(pretrained, family, dtype, t5=t5, config=single_file_config)
    for name, module in pipeline.components.items():
        if isinstance(module, torch.nn.Module):
            setattr(pipeline, name, prepare(module, component_dtype(family, name, dtype)))
    if family in VIDEO_FAMILIES:
        pipeline.scheduler = euler_flow_scheduler(pipeline.scheduler)
    if pretrained in TINY_FLOW:
        from vidinv.models.tiny_flow import T5_TOKENS

        tokens = T5_TOKENS
    else:
        tokens = MAX_SEQUENCE_LENGTH[family]
    return FlowModels(pipeline, family, device, dtype, pretrained, tokens)


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
def flow_condition(models: FlowModels, prompts: list[str], guidance: float | None = None) -> FlowCondition:
    """The text conditions of `prompts` (one row each) from the pipeline's own `encode_prompt`;
    `guidance` is Flux's embedded guidance."""
    pipe, device = models.pipeline, models.device
    if models.family == "sd3":
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=list(prompts),
            prompt_2=None,
            prompt_3=None,
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=models.max_sequence_length,
        )
        return FlowCondition(embeds.to(models.dtype), pooled.to(models.dtype))
    if models.family == "wan":
        embeds, _ = pipe.encode_prompt(
            prompt=list(prompts),
            do_classifier_free_guidance=False,
            max_sequence_length=models.max_sequence_length,
            device=device,
        )
        return FlowCondition(embeds.to(models.dtype), None)
    embeds, pooled, text_ids = pipe.encode_prompt(
        prompt=list(prompts), prompt_2=None, device=device, max_sequence_length=models.max_sequence_length
    )
    rows = torch.full((len(prompts),), 1.0 if guidance is None else float(guidance))
    return FlowCondition(embeds.to(models.dtype), pooled.to(models.dtype), text_ids, rows)
