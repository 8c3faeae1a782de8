"""Load the SD components: a built-in tiny model, a hub id, a local diffusers folder or one file.

SD 1.x, SD 2.x (OpenCLIP text through CLIPTextModel, as diffusers loads it) and SDXL (a second
tokenizer and CLIPTextModelWithProjection); the family is recognised before loading
(`vidinv.models.family`) and recorded on `Models.family`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidinv.errors import VidinvError, first_line
from vidinv.models.families import FAMILIES, Family
from vidinv.models.family import ModelFamily, family_of_folder
from vidinv.models.flow import flow_family_of, load_flow_models
from vidinv.models.hub import hub_local_only
from vidinv.models.paths import SINGLE_FILE_SUFFIXES, looks_like_path

TINY = "tiny"
MODULES = ("text_encoder", "text_encoder_2", "unet", "vae")
COMPONENTS = ("tokenizer", "tokenizer_2", *MODULES, "scheduler")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
log = logging.getLogger("vidinv")


@dataclass
class Models:
    """The components of a latent diffusion model, on one device and in one dtype.

    SDXL adds `tokenizer_2` / `text_encoder_2`; `family` says what the model is (its family's
    record with the checkpoint's prediction type and default size, `ModelFamily`); `controlnets`
    are the ControlNets of `model.controlnet` (empty when none). An SDXL VAE that must not run in
    fp16 (`force_upcast`) stays in fp32. A `vidinv.models.ModelBundle`: `denoiser` is the UNet.
    """

    tokenizer: object
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler: object
    device: torch.device
    dtype: torch.dtype
    source: str
    tokenizer_2: object = None
    text_encoder_2: torch.nn.Module | None = None
    family: ModelFamily | None = None
    controlnets: list = field(default_factory=list)
    offload: str = "none"  # runtime.offload applied to the components (vidinv.models.offload)
    loras: list = field(default_factory=list)  # model.lora applied: {sha256, scale, fused} each (vidinv.models.lora)

    @property
    def denoiser(self) -> torch.nn.Module:
        """The denoiser: the UNet (`vidinv.models.ModelBundle`)."""
        return self.unet

    @property
    def video(self) -> bool:
        """False: a UNet is called frame by frame (vidinv's frame attention joins the frames)."""
        return False

    def components(self) -> list[str]:
        """Names of the components this model has (COMPONENTS order)."""
        return [name for name in COMPONENTS if getattr(self, name) is not None]

    def save_pretrained(self, folder: str | Path) -> None:
        """Write a diffusers Stable Diffusion folder (components + model_index.json).

        `load_models(folder)` reads it back, and it serves as `single_file_config` for checkpoints
        of the same shapes.
        """
        folder = Path(folder)
        for name in self.components():
            getattr(self, name).save_pretrained(folder / name)
        (folder / "model_index.json").write_text(json.dumps(self._model_index(), indent=2), encoding="utf-8")

    def _model_index(self) -> dict:
        """diffusers' pipeline index: each component's library and class (no safety checker)."""
        from diffusers import __version__

        pipeline = self.family.pipeline if self.family else "StableDiffusionPipeline"
        index = {"_class_name": pipeline, "_diffusers_version": __version__}
        for name in self.components():
            cls = type(getattr(self, name))
            index[name] = [cls.__module__.split(".")[0], cls.__name__]
        if self.text_encoder_2 is not None:
            return index | {"force_zeros_for_empty_prompt": bool(self.family and self.family.zero_empty_negative)}
        return index | {
            "safety_checker": [None, None],
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
        }


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps or xpu"


def resolve_device(device: str = "auto", *, present: bool = True) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; anything else must be a torch device string (with
    `present`, one this machine has: `vidinv plan` predicts for a GPU machine from one without)."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise VidinvError(f"model.device: {device!r} is not a device (use {DEVICE_CHOICES})") from err
    if resolved.type not in ("cpu", "cuda", "mps", "xpu"):
        raise VidinvError(f"model.device: {device!r} is not a device vidinv runs on (use {DEVICE_CHOICES})")
    backend = getattr(torch.backends, "mps", None) if resolved.type == "mps" else getattr(torch, resolved.type)
    available = resolved.type == "cpu" or (backend is not None and backend.is_available())
    if resolved.type == "cuda" and available and (resolved.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise VidinvError(
            f"model.device: {device!r} asked for, but this machine has {count} CUDA device(s)"
            f" ({', '.join(f'cuda:{i}' for i in range(count))})"
        )
    if present and not available:
        raise VidinvError(f"model.device: {device!r} asked for, but {resolved.type.upper()} is not available here")
    return resolved


def resolve_dtype(dtype: str, device: torch.device, family: Family | str | None = None) -> torch.dtype:
    """`auto` means half precision on CUDA (the family's `half`: bf16 for the families published in
    it, Flux and Wan, whose range fp16's is too small for; fp16 for the others) and fp32 elsewhere."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        record = FAMILIES.get(family) if isinstance(family, str) else family
        return DTYPES[record.half] if record is not None else torch.float16
    if dtype not in DTYPES:
        raise VidinvError(f"model.dtype: {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _check_diffusers_source(pretrained: str) -> None:
    """A local source must be a folder with a unet/ subfolder; anything else is left to the hub."""
    path = Path(pretrained)
    if path.is_dir() and not (path / "unet").is_dir():
        raise VidinvError(f"model.pretrained: folder {pretrained} has no unet/ subfolder (not a diffusers SD folder)")
    if path.is_file():
        raise VidinvError(
            f"model.pretrained: {pretrained} is neither a diffusers folder nor a {'/'.join(SINGLE_FILE_SUFFIXES)} file"
        )
    if not path.exists() and looks_like_path(pretrained):
        raise VidinvError(f"model.pretrained: folder {pretrained} does not exist")


def _load_diffusers_folder(pretrained: str, dtype: torch.dtype) -> dict:
    """Components of a diffusers-layout SD model: a hub id or a local folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    _check_diffusers_source(pretrained)
    local = {"local_files_only": Path(pretrained).is_dir() or hub_local_only(pretrained)}
    try:
        return {
            "tokenizer": CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", **local),
            "text_encoder": CLIPTextModel.from_pretrained(
                pretrained, subfolder="text_encoder", torch_dtype=dtype, **local
            ),
            "unet": UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet", torch_dtype=dtype, **local),
            "vae": AutoencoderKL.from_pretrained(pretrained, subfolder="vae", torch_dtype=dtype, **local),
            "scheduler": DDIMScheduler.from_pretrained(pretrained, subfolder="scheduler", **local),
            **_second_text_encoder(pretrained, dtype, local),
        }
    except (OSError, ValueError) as err:
        where = "folder" if Path(pretrained).is_dir() else "hub id (needs network or a filled cache)"
        raise VidinvError(f"model.pretrained: cannot load {where} {pretrained!r}: {first_line(err)}") from err


def _second_text_encoder(pretrained: str, dtype: torch.dtype, local: dict) -> dict:
    """SDXL's tokenizer_2 / text_encoder_2 (CLIPTextModelWithProjection) when the source has them
    (`local`: the hub options of the other components)."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    if not _has_component(pretrained, "text_encoder_2"):
        return {}
    return {
        "tokenizer_2": CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer_2", **local),
        "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(
            pretrained, subfolder="text_encoder_2", torch_dtype=dtype, **local
        ),
    }


def _has_component(pretrained: str, name: str) -> bool:
    from vidinv.models.family import read_config

    return name in (read_config(pretrained, "model_index.json") or {})


def _load_components(pretrained: str, dtype: torch.dtype, single_file_config: str | None) -> dict:
    """The five components from the source `pretrained` names (see `load_models`)."""
    from vidinv.models.tiny import TINY_BUILDERS

    if pretrained in TINY_BUILDERS:
        return TINY_BUILDERS[pretrained]()
    if pretrained.endswith(SINGLE_FILE_SUFFIXES):
        from vidinv.models.single_file import load_single_file

        return load_single_file(pretrained, dtype, config=single_file_config)
    family_of_folder(pretrained)  # an unsupported pipeline (SD3, Flux, ...) is refused before loading
    return _load_diffusers_folder(pretrained, dtype)


def _prepare(module: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """The one place modules are cast, moved and frozen: `dtype` on `device`, eval mode, no grads.

    Casts with `cast_module`: only what needs it, the model's fp32 parts kept in fp32.
    """
    param = next(module.parameters())
    module = cast_module(module, dtype)
    if param.device != device:
        module = module.to(device=device)
    return module.eval().requires_grad_(False)


def cast_module(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`module`'s floating tensors in `dtype` (in place), except, in half precision, the parts the
    model keeps in fp32 (`_keep_in_fp32_modules`: Wan's rope, time embedder, scale-shift tables and
    norms; T5's `wo`), as diffusers' and transformers' from_pretrained leave them. Each tensor is
    cast once, from what it holds (no round trip through half precision); no `.to(dtype)` on the
    module, which diffusers warns about."""
    half = dtype in (torch.float16, torch.bfloat16)
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or ()) if half else set()
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        target = torch.float32 if keep.intersection(name.split(".")) else dtype
        if tensor.is_floating_point() and tensor.dtype != target:
            tensor.data = tensor.data.to(target)
    return module


def _vae_dtype(vae, dtype: torch.dtype, family: ModelFamily) -> torch.dtype:
    """fp32 for an SDXL VAE whose config asks to be upcast when the model runs in fp16, as diffusers'
    SDXL pipelines do (SD 1.x/2.x pipelines ignore `force_upcast`)."""
    upcast = family.reads_force_upcast and getattr(vae.config, "force_upcast", False)
    return torch.float32 if dtype == torch.float16 and upcast else dtype


def _family(parts: dict, pretrained: str, config: str | None) -> ModelFamily:
    """The loaded components' family; SDXL's zero negative prompt from the source's model_index.json."""
    from vidinv.models.family import family_of_components, read_config
    from vidinv.models.tiny import TINY_BUILDERS

    index_source = config if pretrained.endswith(SINGLE_FILE_SUFFIXES) else pretrained
    builtin = index_source is None or index_source in TINY_BUILDERS
    return family_of_components(parts, None if builtin else read_config(index_source, "model_index.json"))


def note_unapplied_scheduler_options(scheduler) -> None:
    """A one-line note when the scheduler config asks for x0 clipping or dynamic thresholding, which
    vidinv's deterministic steps do not apply (an inversion needs the unclipped x0 estimate; the
    published SD 1.x / 2.x / SDXL configs set neither)."""
    options = [name for name in ("clip_sample", "thresholding") if scheduler.config.get(name)]
    if options:
        log.warning("note: the scheduler's %s is not applied (vidinv steps without it)", " and ".join(options))


def quiet_loading_bars() -> None:
    """No weight-loading bars of diffusers / transformers when the hub's bars are off
    (HF_HUB_DISABLE_PROGRESS_BARS=1, as the command line sets without --debug)."""
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1":
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()


def load_models(
    pretrained: str = TINY,
    *,
    dtype: str = "auto",
    device: str = "auto",
    single_file_config: str | None = None,
    prediction_type: str = "auto",
    vae: str | None = None,
    controlnet: str | list[str] | None = None,
    t5: bool = True,
    offload: str = "none",
    lora=None,
    lora_fuse: bool = True,
) -> Models:
    """Load tokenizer(s), text encoder(s), UNet, VAE and a DDIM scheduler, in eval mode on `device`.

    `pretrained` is `tiny` / `tiny-sd2` / `tiny-sdxl` (built-in offline models), a hub id, a local
    diffusers folder, or a single `.safetensors`/`.ckpt` checkpoint (original layout: an SD 1.x / 2.x /
    SDXL LDM checkpoint, or an SD3 / Flux transformer; `single_file_config` names a diffusers folder
    or hub id with the other components: their configs for SD (else diffusers infers them), configs
    and weights for SD3 / Flux (required)). `prediction_type` overrides the scheduler's (`auto` keeps it), `vae`
    replaces the pipeline's VAE (hub id or folder, e.g. an fp16-safe one), `controlnet` loads one
    ControlNet or several (hub ids, folders or single files) into `Models.controlnets`.
    `t5` false loads SD3 without its T5 text encoder (an error for Flux and for models without T5).
    `offload` (model | sequential) loads every component onto the CPU and offloads it to `device`
    from there (`vidinv.models.offload`): the device never holds more than the offload allows.
    `lora` (model.lora: a path, {path, scale, name} or a list) is loaded by the family's diffusers
    loader once the components are built, merged into the weights with `lora_fuse`
    (`vidinv.models.lora`).
    """
    from vidinv.config import lora_specs
    from vidinv.models.lora import apply_loras
    from vidinv.models.offload import OFFLOAD_MODES, apply_offload

    if offload not in OFFLOAD_MODES:
        raise VidinvError(f"runtime.offload: {offload!r} is not one of {', '.join(OFFLOAD_MODES)}")
    torch_device = resolve_device(device)
    place = torch.device("cpu") if offload != "none" else torch_device  # where the weights load
    quiet_loading_bars()
    pretrained = os.path.expanduser(str(pretrained))
    config = os.path.expanduser(single_file_config) if single_file_config else None
    flow_family = FAMILIES.get(flow_family_of(pretrained, config))
    torch_dtype = resolve_dtype(dtype, torch_device, flow_family)
    if flow_family is not None:  # SD3 / Flux / Wan: vidinv.models.flow
        models = load_flow_models(
            pretrained,
            flow_family,
            dtype=torch_dtype,
            device=torch_device,
            prepare=lambda module, module_dtype: _prepare(module, module_dtype, place),
            t5=t5,
            single_file_config=config,
        )
        apply_loras(models, lora_specs(lora, check_files=True), fuse=lora_fuse)
        apply_offload(models, offload)
        return models
    if not t5:
        raise VidinvError(f"model.t5: {pretrained} has no T5 text encoder to drop (only SD3 does)")
    parts = _load_components(pretrained, torch_dtype, config)
    if vae:
        from vidinv.models.vae import load_vae

        parts["vae"] = load_vae(os.path.expanduser(vae), torch_dtype)
    family = _family(parts, pretrained, config).with_prediction_type(prediction_type)
    if parts["scheduler"].config.get("prediction_type") != family.prediction_type:  # model.prediction_type
        parts["scheduler"] = type(parts["scheduler"]).from_config(
            parts["scheduler"].config, prediction_type=family.prediction_type
        )
    note_unapplied_scheduler_options(parts["scheduler"])
    for name in MODULES:
        if name in parts:
            wanted = _vae_dtype(parts[name], torch_dtype, family) if name == "vae" else torch_dtype
            parts[name] = _prepare(parts[name], wanted, place)
    models = Models(**parts, device=torch_device, dtype=torch_dtype, source=pretrained, family=family)
    if controlnet:
        from vidinv.models.controlnet import load_controlnets

        models.controlnets = [
            _prepare(c, torch_dtype, place) for c in load_controlnets(controlnet, torch_dtype, models.unet)
        ]
    apply_loras(models, lora_specs(lora, check_files=True), fuse=lora_fuse)
    apply_offload(models, offload)
    return models


def models_from_config(model_config, offload: str = "none") -> Models:
    """`load_models` with the keys of a `ModelConfig` (config.model), offloaded as `offload`
    (runtime.offload) from the start."""
    m = model_config
    return load_models(
        m.pretrained,
        dtype=m.dtype,
        device=m.device,
        single_file_config=m.single_file_config,
        prediction_type=m.prediction_type,
        vae=m.vae,
        controlnet=m.controlnet,
        t5=m.t5,
        offload=offload,
        lora=m.lora,
        lora_fuse=m.lora_fuse,
    )
