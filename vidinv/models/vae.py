"""Chunked VAE encode/decode: `vae_chunk` frames per call, so memory is set by the chunk; optionally
in overlapping spatial tiles (diffusers' tiled AutoencoderKL), so memory is set by the tile too.

`frame_encoder(vae)` / `frame_decoder(vae)` take a clip chunk by chunk (`push`; `finish` returns the
latents an encoder still holds, or None): a per-frame VAE (SD, SDXL, SD3, Flux) encodes each chunk
alone; Wan's 3D causal VAE carries its causal cache from chunk to chunk (`vidinv.models.causal_vae`),
its latent frames 4 video frames each; LTX-Video's, HunyuanVideo's and CogVideoX's video VAEs encode
and decode the whole clip in diffusers' one call, tiled by diffusers (`vidinv.models.clip_vae`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from vidinv.chunks import frame_slices
from vidinv.errors import VidinvError
from vidinv.models.causal_vae import CausalDecoder, CausalEncoder, is_causal_video_vae
from vidinv.models.clip_vae import ClipDecoder, ClipEncoder, is_clip_video_vae
from vidinv.models.offload import execution_device, placement

log = logging.getLogger("vidinv")
TILE_OVERLAP = 0.25  # fraction of a tile shared with its neighbour and blended (diffusers' default)


def spatial_factor(vae_config) -> int:
    """Pixels per latent pixel of a VAE config (8): Wan's scale_factor_spatial, HunyuanVideo's and
    LTX-Video's spatial_compression_ratio (LTX's from its patch and scalings when unset), else
    2 ** (levels - 1)."""
    if vae_config.get("scale_factor_spatial"):
        return int(vae_config["scale_factor_spatial"])
    if vae_config.get("spatial_compression_ratio"):
        return int(vae_config["spatial_compression_ratio"])
    if "spatio_temporal_scaling" in vae_config:  # LTX-Video with the ratio unset
        return int(vae_config.get("patch_size", 1) * 2 ** sum(vae_config["spatio_temporal_scaling"]))
    return 2 ** (len(vae_config.get("block_out_channels", (0,) * 4)) - 1)


def latent_channels(vae_config) -> int:
    """Channels of a VAE config's latents (AutoencoderKL's latent_channels, Wan's z_dim)."""
    return int(vae_config.get("latent_channels") or vae_config.get("z_dim") or 4)


def scale_factor(vae) -> int:
    """Pixels per latent pixel of `vae` (8 for SD's and Wan's VAEs)."""
    return spatial_factor(vae.config)


def pixel_size(vae, latents: torch.Tensor) -> tuple[int, int]:
    """(H, W) in pixels of latents (..., h, w)."""
    factor = scale_factor(vae)
    return latents.shape[-2] * factor, latents.shape[-1] * factor


TILING_ATTRS = ("use_tiling", "tile_sample_min_size", "tile_latent_min_size", "tile_overlap_factor")
CAUSAL_TILING_ATTRS = ("use_tiling", "tile_sample_min_height", "tile_sample_min_width",
                       "tile_sample_stride_height", "tile_sample_stride_width")  # fmt: skip
# the whole-clip video VAEs' (vidinv.models.clip_vae): per-side tiles and strides (LTX-Video,
# HunyuanVideo) or overlap factors (CogVideoX), and their temporal tiling
CLIP_TILING_ATTRS = (*CAUSAL_TILING_ATTRS, "use_framewise_encoding", "use_framewise_decoding",
                     "tile_overlap_factor_height", "tile_overlap_factor_width")  # fmt: skip


def set_vae_tiling(vae, tile_size: int | None) -> None:
    """Make `vae` encode/decode frames larger than `tile_size` pixels (a side) in overlapping tiles
    blended linearly (diffusers' `enable_tiling`, with the tile size set); None turns tiling off."""
    if tile_size is None:
        vae.disable_tiling()
        return
    if is_causal_video_vae(vae):  # Wan: tile and stride per side (its default 256 / 192 is the same overlap)
        stride = int(tile_size * (1 - TILE_OVERLAP))
        vae.enable_tiling(tile_size, tile_size, stride, stride)
        return
    if is_clip_video_vae(vae):  # diffusers' own spatial and temporal tiling, at this tile size
        vae.enable_tiling()
        vae.tile_sample_min_height = vae.tile_sample_min_width = tile_size
        if hasattr(vae, "tile_sample_stride_height"):
            # a whole number of latent pixels: diffusers' tiled encode drops the rest (LTX: 32 px)
            factor = scale_factor(vae)
            stride = max(factor, int(tile_size * (1 - TILE_OVERLAP)) // factor * factor)
            vae.tile_sample_stride_height = vae.tile_sample_stride_width = stride
        else:  # CogVideoX: overlap factors
            vae.tile_overlap_factor_height = vae.tile_overlap_factor_width = TILE_OVERLAP
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
    names = CAUSAL_TILING_ATTRS if is_causal_video_vae(vae) else TILING_ATTRS
    names = [name for name in CLIP_TILING_ATTRS if hasattr(vae, name)] if is_clip_video_vae(vae) else names
    saved = [getattr(vae, name) for name in names]
    set_vae_tiling(vae, tile_size)
    try:
        yield
    finally:
        for name, value in zip(names, saved):
            setattr(vae, name, value)


class FrameEncoder:
    """A per-frame VAE's encoder: every pushed chunk (k, 3, H, W) in [-1, 1] -> its latents (k, c, h, w),
    the posterior mean scaled (and shifted) by the VAE's factors.

    The frames are made contiguous first: a convolution's result depends (in the last bits) on
    its input's memory layout, and a stream's chunks are channels-last views (`frames_from_uint8`),
    so without it `vidinv edit` and `VideoEditor.edit` on the same pictures differed by ~4e-7."""

    def __init__(self, vae):
        self.vae = vae

    @torch.no_grad()
    def push(self, frames: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        device, dtype = placement(vae)
        call = lambda dt: vae.encode(frames.to(device=device, dtype=dt).contiguous()).latent_dist.mean  # noqa: E731
        mean = overflow_safe(vae, call, dtype)
        shift = latent_shift(vae)
        return (mean if shift is None else mean - shift) * vae.config.scaling_factor

    def finish(self) -> None:
        """The end of the clip (nothing is held between chunks: no latents left)."""


class FrameDecoder:
    """A per-frame VAE's decoder: latents (k, c, h, w) -> frames (k, 3, 8h, 8w) in [-1, 1], float32 on the CPU."""

    frames_per_latent = 1

    def __init__(self, vae):
        self.vae = vae

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        device, dtype = placement(vae)
        call = lambda dt: vae.decode(decoder_input(vae, latents, device, dt)).sample  # noqa: E731
        return overflow_safe(vae, call, dtype).clamp(-1, 1).float().cpu()


def frame_encoder(vae) -> FrameEncoder | CausalEncoder | ClipEncoder:
    """The encoder that takes a clip chunk by chunk: per frame, Wan's causal one, or a whole-clip
    video VAE's (module docstring)."""
    if is_clip_video_vae(vae):
        return ClipEncoder(vae)
    return CausalEncoder(vae) if is_causal_video_vae(vae) else FrameEncoder(vae)


def frame_decoder(vae) -> FrameDecoder | CausalDecoder | ClipDecoder:
    """The decoder that takes a clip's latents chunk by chunk, in order (a whole-clip one: at once)."""
    if is_clip_video_vae(vae):
        return ClipDecoder(vae)
    return CausalDecoder(vae) if is_causal_video_vae(vae) else FrameDecoder(vae)


def finish_encoding(encoder, parts: list[torch.Tensor]) -> torch.Tensor:
    """The clip's latents: the pushed parts and what the encoder still held at the end."""
    rest = encoder.finish()
    return torch.cat([part for part in parts if part.dim() == 4] + ([] if rest is None else [rest]))


@torch.no_grad()
def encode_frames(
    vae, frames: torch.Tensor, chunk: int | None = None, *, progress: bool = False, tile_size: int | None = None
) -> torch.Tensor:
    """frames (f, 3, H, W) in [-1, 1] -> latents (f, c, H/8, W/8), scaled by the VAE's factor (Wan:
    (1 + (f - 1) / 4, c, H/8, W/8), normalised by its latent statistics).

    Uses the posterior mean (deterministic), so chunked and unchunked encodes agree. `tile_size`
    tiles frames larger than that (pixels) for this call; None keeps the VAE's `set_vae_tiling`.
    """
    parts = []
    with _tiling(vae, tile_size):
        encoder = frame_encoder(vae)
        for part in tqdm(frame_slices(len(frames), chunk), desc="vae encode", disable=not progress, leave=False):
            parts.append(encoder.push(frames[part]))
        return finish_encoding(encoder, parts)


@torch.no_grad()
def decode_latents(
    vae, latents: torch.Tensor, chunk: int | None = None, *, progress: bool = False, tile_size: int | None = None
) -> torch.Tensor:
    """latents (f, c, h, w) -> frames (f, 3, 8h, 8w) in [-1, 1] (clamped), float32 on the CPU (Wan:
    1 + 4 (f - 1) frames; `chunk` counts latent frames).

    `tile_size` as in `encode_frames` (pixels; the latent tile is an eighth of it).
    """
    parts = []
    with _tiling(vae, tile_size):
        decoder = frame_decoder(vae)
        chunk = None if getattr(decoder, "whole_clip", False) else chunk
        for part in tqdm(frame_slices(len(latents), chunk), desc="vae decode", disable=not progress, leave=False):
            parts.append(decoder.push(latents[part]))
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
