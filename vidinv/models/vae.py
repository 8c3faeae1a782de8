"""Chunked VAE encode/decode: `vae_chunk` frames per call, so memory is set by the chunk; optionally
in overlapping spatial tiles (diffusers' tiled AutoencoderKL), so memory is set by the tile too.

An fp16 VAE whose activations overflow (SDXL's VAE, a known issue) gives non-finite values: such a
chunk is encoded/decoded again with the VAE upcast to fp32, as diffusers' SDXL pipelines do with
`upcast_vae` (an SDXL VAE with `force_upcast` is loaded in fp32 in the first place; an fp16-safe VAE
can be given with `model.vae`). The VAE stays fp32 for the rest of the call, is cast back after,
and later calls of that VAE start in fp32 (one note per VAE).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from vidinv.chunks import frame_slices
from vidinv.errors import VidinvError
from vidinv.models.offload import execution_device

TILE_OVERLAP = 0.25  # fraction of a tile shared with its neighbour and blended (diffusers' default)
OVERFLOWED = "_vidinv_fp16_overflowed"  # set on a VAE whose fp16 encode/decode gave non-finite values
log = logging.getLogger("vidinv")


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


def _cast(vae, dtype: torch.dtype) -> None:
    """vae's weights in `dtype`, in place (torch's `Module.to`: diffusers' own warns on every cast)."""
    torch.nn.Module.to(vae, dtype=dtype)


@contextmanager
def _fp32_fallback(vae) -> Iterator[Callable]:
    """`run(call, x)`: call(x) in the VAE's dtype, or again with the VAE upcast to fp32 when an fp16
    result is not finite (module docstring); the VAE's own dtype is back after the block."""
    own = next(vae.parameters()).dtype

    def upcast() -> None:
        if next(vae.parameters()).device.type == "meta":  # sequential offload: the hooks hold fp16 weights
            raise VidinvError(
                "model.vae: the VAE overflows in fp16 and cannot be upcast under runtime.offload=sequential:"
                " give an fp16-safe VAE with model.vae, or use model.dtype=bf16 or fp32"
            )
        if not getattr(vae, OVERFLOWED, False):
            log.warning(
                "note: the VAE overflows in fp16 (non-finite values); it runs in fp32 (model.vae: an fp16-safe VAE)"
            )
            setattr(vae, OVERFLOWED, True)
        _cast(vae, torch.float32)

    def run(call, x: torch.Tensor) -> torch.Tensor:
        dtype = next(vae.parameters()).dtype
        out = call(x.to(dtype))
        if dtype != torch.float16 or out.isfinite().all():
            return out
        upcast()
        return call(x.float())

    if own == torch.float16 and getattr(vae, OVERFLOWED, False):
        upcast()
    try:
        yield run
    finally:
        if next(vae.parameters()).dtype != own:
            _cast(vae, own)


@torch.no_grad()
def encode_frames(
    vae, frames: torch.Tensor, chunk: int | None = None, *, progress: bool = False, tile_size: int | None = None
) -> torch.Tensor:
    """frames (f, 3, H, W) in [-1, 1] -> latents (f, 4, H/8, W/8), scaled by the VAE's factor.

    Uses the posterior mean (deterministic), so chunked and unchunked encodes agree. `tile_size`
    tiles frames larger than that (pixels) for this call; None keeps the VAE's `set_vae_tiling`.
    """
    device = execution_device(vae)
    shift = latent_shift(vae)
    parts = []
    with _tiling(vae, tile_size), _fp32_fallback(vae) as run:
        for part in tqdm(frame_slices(len(frames), chunk), desc="vae encode", disable=not progress, leave=False):
            mean = run(lambda x: vae.encode(x).latent_dist.mean, frames[part].to(device))
            parts.append((mean if shift is None else mean - shift) * vae.config.scaling_factor)
    return torch.cat(parts)


@torch.no_grad()
def decode_latents(
    vae, latents: torch.Tensor, chunk: int | None = None, *, progress: bool = False, tile_size: int | None = None
) -> torch.Tensor:
    """latents (f, 4, h, w) -> frames (f, 3, 8h, 8w) in [-1, 1] (clamped), float32 on the CPU.

    `tile_size` as in `encode_frames` (pixels; the latent tile is an eighth of it).
    """
    device = execution_device(vae)
    shift = latent_shift(vae)

    def decode(z: torch.Tensor) -> torch.Tensor:
        z = z / vae.config.scaling_factor
        return vae.decode(z if shift is None else z + shift).sample

    parts = []
    with _tiling(vae, tile_size), _fp32_fallback(vae) as run:
        for part in tqdm(frame_slices(len(latents), chunk), desc="vae decode", disable=not progress, leave=False):
            parts.append(run(decode, latents[part].to(device)).clamp(-1, 1).float().cpu())
    return torch.cat(parts)


def load_vae(source: str, dtype: torch.dtype):
    """`model.vae`: an AutoencoderKL replacing the pipeline's (a hub id or folder, e.g. an fp16-safe
    VAE such as madebyollin/sdxl-vae-fp16-fix); a pipeline folder's vae/ subfolder is used."""
    from pathlib import Path

    from diffusers import AutoencoderKL

    from vidinv.errors import VidinvError, first_line

    subfolder = "vae" if (Path(source) / "vae" / "config.json").is_file() else None
    try:
        return AutoencoderKL.from_pretrained(source, subfolder=subfolder, torch_dtype=dtype)
    except (OSError, ValueError) as err:
        raise VidinvError(f"model.vae: cannot load VAE {source!r}: {first_line(err)}") from err
