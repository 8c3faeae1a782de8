"""Load the SD components: the built-in tiny model, a hub id, a local diffusers folder or one file."""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vidinv.errors import VidinvError, first_line

TINY = "tiny"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
MODULES = ("text_encoder", "unet", "vae")
COMPONENTS = ("tokenizer", *MODULES, "scheduler")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
HUB_TIMEOUT_S = 5.0  # one reachability probe of the hub, instead of its retries (minutes when it is down)
CONFIG_FILES = ["model_index.json", "*/config.json", "scheduler/scheduler_config.json"]
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


def looks_like_path(name: str) -> bool:
    """True for an existing path or one written as a path; `org/model` (a hub id) is not."""
    return Path(name).exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


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


@functools.cache
def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached (one probe per process, HUB_TIMEOUT_S at most), or None."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(f"{constants.ENDPOINT}/api/models", timeout=HUB_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 (every network failure means the same here)
        return f"the hub {constants.ENDPOINT} cannot be reached ({type(err).__name__})"
    return None


def hub_local_only(repo_id: str) -> bool:
    """Whether to read the hub id `repo_id` from the hub cache only: with HF_HUB_OFFLINE=1, or when
    the hub cannot be reached and the cache has the model (a one-line note). Unreachable and not
    cached: a one-line VidinvError within seconds, never minutes of retries."""
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE:
        problem = "HF_HUB_OFFLINE=1 is set"
    else:
        problem = _hub_unreachable()
        if problem is None:
            return False
    if isinstance(try_to_load_from_cache(repo_id, "unet/config.json"), str):
        if not constants.HF_HUB_OFFLINE:
            log.warning("note: %s; loading %r from the hub cache", problem, repo_id)
        return True
    raise VidinvError(
        f"model.pretrained: {repo_id!r} is not in the hub cache and {problem}: give a local diffusers folder "
        "or a .safetensors/.ckpt file, or download it once online and then run with HF_HUB_OFFLINE=1"
    )


def hub_config_folder(repo_id: str) -> Path:
    """The local snapshot folder of hub id `repo_id` holding (at least) its config files, fetched
    when missing (the weights are left to `load_models`)."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, allow_patterns=CONFIG_FILES, local_files_only=hub_local_only(repo_id))
    except VidinvError:
        raise
    except Exception as err:  # noqa: BLE001 (not found, not cached, gated: all one line)
        raise VidinvError(f"model.pretrained: cannot get hub id {repo_id!r}: {first_line(err)}") from err
    return Path(folder)


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
    parts = _load_components(pretrained, torch_dtype, config)
    for name in MODULES:
        parts[name] = _prepare(parts[name], torch_dtype, torch_device)
    return Models(**parts, device=torch_device, dtype=torch_dtype, source=pretrained)
