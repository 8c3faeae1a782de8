"""Load the SD components: the built-in tiny model, a hub id, a local diffusers folder or one file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vidinv.errors import VidinvError

TINY = "tiny"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
        """Write a diffusers-layout folder that `load_models(folder)` reads back."""
        folder = Path(folder)
        for name in ("tokenizer", "text_encoder", "unet", "vae", "scheduler"):
            getattr(self, name).save_pretrained(folder / name)


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


def _load_diffusers_folder(pretrained: str, dtype: torch.dtype) -> dict:
    """Components of a diffusers-layout SD model: a hub id or a local folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    local = Path(pretrained).is_dir()
    if not local and Path(pretrained).exists():
        raise VidinvError(f"model.pretrained: {pretrained} is neither a diffusers folder nor a {'/'.join(SINGLE_FILE_SUFFIXES)} file")
    if local and not (Path(pretrained) / "unet").is_dir():
        raise VidinvError(f"model.pretrained: folder {pretrained} has no unet/ subfolder (not a diffusers Stable Diffusion folder)")
    try:
        return dict(
            tokenizer=CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer"),
            text_encoder=CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", torch_dtype=dtype),
            unet=UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet", torch_dtype=dtype),
            vae=AutoencoderKL.from_pretrained(pretrained, subfolder="vae", torch_dtype=dtype),
            scheduler=DDIMScheduler.from_pretrained(pretrained, subfolder="scheduler"),
        )
    except (OSError, ValueError) as err:
        where = "folder" if local else "hub id (needs network or a filled cache)"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VidinvError(f"model.pretrained: cannot load {where} {pretrained!r}: {first_line}") from err


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
    if pretrained == TINY:
        from vidinv.models.tiny import build_tiny_components

        parts = build_tiny_components()
    elif str(pretrained).endswith(SINGLE_FILE_SUFFIXES):
        from vidinv.models.single_file import load_single_file

        parts = load_single_file(pretrained, torch_dtype, config=single_file_config)
    else:
        parts = _load_diffusers_folder(pretrained, torch_dtype)
    for name in ("text_encoder", "unet", "vae"):
        module = parts[name]
        param = next(module.parameters())
        if param.dtype != torch_dtype:
            module = module.to(dtype=torch_dtype)
        if param.device != torch_device:
            module = module.to(device=torch_device)
        parts[name] = module.eval().requires_grad_(False)
    return Models(**parts, device=torch_device, dtype=torch_dtype, source=str(pretrained))
