"""Load the SD components: the built-in tiny model, a hub id, a local diffusers folder or one file."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vidinv.errors import VidinvError, first_line
from vidinv.models.flow import flow_family_of, load_flow_models
from vidinv.models.hub import hub_local_only
from vidinv.models.paths import SINGLE_FILE_SUFFIXES, looks_like_path

TINY = "tiny"
MODULES = ("text_encoder", "unet", "vae")
COMPONENTS = ("tokenizer", *MODULES, "scheduler")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
log = logging.getLogger("vidinv")


@dataclass
class Models:
    """The five components of a latent diffusion model, on one device and in one dtype."""

    tokenizer: object
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler: object
    device: torch.device
    dtype: torch.dtype
    source: str

    def save_pretrained(self, folder: str | Path) -> None:
        """Write a diffusers Stable Diffusion folder (components + model_index.json).

        `load_models(folder)` reads it back, and it serves as `single_file_config` for checkpoints
        of the same shapes.
        """
        folder = Path(folder)
        for name in COMPONENTS:
            getattr(self, name).save_pretrained(folder / name)
        (folder / "model_index.json").write_text(json.dumps(self._model_index(), indent=2), encoding="utf-8")

    def _model_index(self) -> dict:
        """diffusers' pipeline index: each component's library and class (no safety checker)."""
        from diffusers import __version__

        index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": __version__}
        for name in COMPONENTS:
            cls = type(getattr(self, name))
            index[name] = [cls.__module__.split(".")[0], cls.__name__]
        return index | {
            "safety_checker": [None, None],
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
        }


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; anything else must be a torch device string."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise VidinvError(f"model.device: {device!r} is not a device (use auto, cpu, cuda, cuda:N or mps)") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise VidinvError(f"model.device: {device!r} asked for, but CUDA is not available here")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` means fp16 on CUDA and fp32 elsewhere."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
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
        }
    except (OSError, ValueError) as err:
        where = "folder" if Path(pretrained).is_dir() else "hub id (needs network or a filled cache)"
        raise VidinvError(f"model.pretrained: cannot load {where} {pretrained!r}: {first_line(err)}") from err


def _load_components(pretrained: str, dtype: torch.dtype, single_file_config: str | None) -> dict:
    """The five components from the source `pretrained` names (see `load_models`)."""
    if pretrained == TINY:
        from vidinv.models.tiny import build_tiny_components

        return build_tiny_components()
    if pretrained.endswith(SINGLE_FILE_SUFFIXES):
        from vidinv.models.single_file import load_single_file

        return load_single_file(pretrained, dtype, config=single_file_config)
    return _load_diffusers_folder(pretrained, dtype)


def _prepare(module: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """The one place modules are cast, moved and frozen: `dtype` on `device`, eval mode, no grads.

    Casts only when needed (diffusers warns on every `.to(dtype=...)`).
    """
    param = next(module.parameters())
    if param.dtype != dtype:
        module = module.to(dtype=dtype)
    if param.device != device:
        module = module.to(device=device)
    return module.eval().requires_grad_(False)


def load_models(
    pretrained: str = TINY, *, dtype: str = "auto", device: str = "auto", single_file_config: str | None = None
) -> Models:
    """Load tokenizer, text encoder, UNet, VAE and a DDIM scheduler, in eval mode on `device`.

    `pretrained` is `tiny` (the built-in offline model), a hub id, a local diffusers folder, or a
    single `.safetensors`/`.ckpt` checkpoint (original LDM layout; `single_file_config` names a
    diffusers folder or hub id holding the component configs, else diffusers infers them).
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    pretrained = os.path.expanduser(str(pretrained))
    config = os.path.expanduser(single_file_config) if single_file_config else None
    flow_family = flow_family_of(pretrained)
    if flow_family is not None:  # SD3 / Flux: vidinv.models.flow
        return load_flow_models(pretrained, flow_family, dtype=torch_dtype, device=torch_device, prepare=_prepare)
    parts = _load_components(pretrained, torch_dtype, config)
    for name in MODULES:
        parts[name] = _prepare(parts[name], torch_dtype, torch_device)
    return Models(**parts, device=torch_device, dtype=torch_dtype, source=pretrained)
