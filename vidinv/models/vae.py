"""Chunked VAE encode/decode: `vae_chunk` frames per call, so memory is set by the chunk; optionally
in overlapping spatial tiles (diffusers' tiled AutoencoderKL), so memory is set by the tile too."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from vidinv.chunks import frame_slices
from vidinv.errors import VidinvError
from vidinv.models.offload import execution_device

log = logging.getLogger("vidinv")
TILE_OVERLAP = 0.25  # fraction of a tile shared with its neighbour and blended (diffusers' default)


def scale_factor(vae) -> int:
    """Pixels per latent pixel (8 for SD's VAE): 2 ** (levels - 1)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def pixel_size(vae, latents: torch.Tensor) -> tuple[int, int]:
    """(H, W) in pixels of latents (..., h, w)."""
    factor = scale_factor(vae)
    return latents.shape[-2] * factor, latents.shape[-1] * factor


def set_vae_tiling(vae, tile_size: int | None) -> None:
    """Make `vae` encode/decode frames larger than `tile_size` pixels (a side) in overlapping tiles
    blended linearly (diffusers' `enable_tiling`, with the tile size set); None turns tiling off."""
    if tile_size is None:
        vae.disable_tiling()
        return
    vae.enable_tiling()
    vae.tile_sample_min_size = tile_size
    vae.tile_latent_min_size = tile_size // scale_factor(vae)
    vae.tile_overlap_factor = TILE_OVERLAP


def latent_shift(vae) -> float | None:
    """The VAE's latent shift (SD3, Flux: latents = (mean - shift) * scale); None for SD's VAE."""
    return vae.config.get("shift_factor", None)


@contextmanager
def _tiling(vae, tile_size: int | None) -> Iterator[None]:
    """`tile_size` for the calls inside the block (None: the VAE's own setting), then the VAE's own."""
    if tile_size is None:
        yield
        return
    saved = vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor
    set_vae_tiling(vae, tile_size)
    try:
        yield
    finally:
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor = saved


@torch.no_grad()
def encode_frames(
    vae, frames: torch.Tensor, chunk: int | None = None, *, progress: bool = False, tile_size: int | None = None
) -> torch.Tensor:
    """frames (f, 3, H, W) in [-1, 1] -> latents (f, 4, H/8, W/8), scaled by the VAE's factor.

    Uses the posterior mean (deterministic), so chunked and unchunked encodes agree. `tile_size`
    tiles frames larger than that (pixels) for this call; None keeps the VAE's `set_vae_tiling`.
    """
    device, dtype = execution_device(vae), next(vae.parameters()).dtype
    parts = []
    with _tiling(vae, tile_size):
        for part in tqdm(frame_slices(len(frames), chunk), desc="vae encode", disable=not progress, leave=False):
            x = frames[part]
            mean = overflow_safe(vae, lambda dt, x=x: vae.encode(x.to(device=device, dtype=dt)).latent_dist.mean, dtype)
            shift = latent_shift(vae)
            parts.append((mean if shift is None else mean - shift) * vae.config.scaling_factor)
    return torch.cat(parts)


@torch.no_grad()
def decode_latents(
    vae, latents: torch.Tensor, chunk: int | None = None, *, progress: bool = False, tile_size: int | None = None
) -> torch.Tensor:
    """latents (f, 4, h, w) -> frames (f, 3, 8h, 8w) in [-1, 1] (clamped), float32 on the CPU.

    `tile_size` as in `encode_frames` (pixels; the latent tile is an eighth of it).
    """
    device, dtype = execution_device(vae), next(vae.parameters()).dtype
    parts = []
    with _tiling(vae, tile_size):
        for part in tqdm(frame_slices(len(latents), chunk), desc="vae decode", disable=not progress, leave=False):
            z = latents[part]
            out = overflow_safe(vae, lambda dt, z=z: vae.decode(decoder_input(vae, z, device, dt)).sample, dtype)
            parts.append(out.clamp(-1, 1).float().cpu())
    return torch.cat(parts)


def decoder_input(vae, latents: torch.Tensor, device, dtype: torch.dtype) -> torch.Tensor:
    """The VAE decoder's input for scaled latents: latents / scale (+ shift for SD3 / Flux)."""
    z = latents.to(device=device, dtype=dtype) / vae.config.scaling_factor
    shift = latent_shift(vae)
    return z if shift is None else z + shift


def overflow_safe(vae, call, dtype: torch.dtype) -> torch.Tensor:
    """call(dtype) (a VAE call with its input in `dtype`, the VAE's); when a half-precision VAE
    overflows (non-finite output: the known SDXL VAE problem in fp16) the call is made again with
    the VAE in fp32 (as diffusers' `upcast_vae`), then the VAE goes back to its dtype. A note once
    per process; a one-line error under sequential offload (its weights are not the VAE's to cast)."""
    out = call(dtype)
    if dtype == torch.float32 or bool(torch.isfinite(out).all()):
        return out
    if any(hasattr(m, "_hf_hook") for m in vae.modules()) and execution_device(vae) != next(vae.parameters()).device:
        raise VidinvError(
            f"model.vae: the VAE overflowed in {dtype} under runtime.offload=sequential; give an fp16-safe VAE"
            " (model.vae) or model.dtype=fp32"
        )
    if not _overflow_noted:
        _overflow_noted.append(dtype)
        log.warning("note: the VAE overflowed in %s; running it in fp32 (model.vae can name an fp16-safe VAE)", dtype)
    vae.to(torch.float32)
    try:
        return call(torch.float32)
    finally:
        vae.to(dtype)


_overflow_noted: list = []


def load_vae(source: str, dtype: torch.dtype):
    """`model.vae`: an AutoencoderKL replacing the pipeline's (a hub id or folder, e.g. an fp16-safe
    VAE such as madebyollin/sdxl-vae-fp16-fix); a pipeline folder's vae/ subfolder is used."""
    from pathlib import Path

    from diffusers import AutoencoderKL

    from vidinv.errors import first_line

    subfolder = "vae" if (Path(source) / "vae" / "config.json").is_file() else None
    try:
        return AutoencoderKL.from_pretrained(source, subfolder=subfolder, torch_dtype=dtype)
    except (OSError, ValueError) as err:
        raise VidinvError(f"model.vae: cannot load VAE {source!r}: {first_line(err)}") from err
