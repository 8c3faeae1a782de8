"""Wan's 3D causal VAE (diffusers' `AutoencoderKLWan`; Wan 2.2's patchified one too) streamed along
time and tiled in space.

The encoder reads a clip in causal groups (the first frame alone, then 4 frames at a time) and
carries its causal convolutions' feature cache from group to group; the decoder turns the first
latent frame into 1 frame and every later one into 4 the same way. diffusers runs these loops over
a whole clip (`_encode` / `_decode`; `tiled_encode` / `tiled_decode` with one cache per spatial
tile, blended where tiles overlap). Here the same loops run over a clip that arrives in chunks of
any size: each tile keeps its own cache between pushes and each group is blended as it comes, so
the streamed latents and frames equal diffusers' whole-clip ones (tested) while only one group's
frames and the caches are held.

    encoder = CausalEncoder(vae)
    latents = torch.cat([encoder.push(chunk) for chunk in chunks])   # (f', c, h, w), f' = 1 + (f - 1) / 4
    encoder.finish()                                                # a one-line error unless f = 4k + 1
    frames = CausalDecoder(vae).push(latents)                       # (f, 3, H, W), in chunks of any size too

Latents are normalised per channel as WanPipeline does: z = (mean - latents_mean) / latents_std.
A clip must have 4k + 1 frames (`check_frame_count` names the nearest valid counts otherwise).
"""

from __future__ import annotations

import torch
from einops import rearrange

from vidinv.errors import VidinvError
from vidinv.models.offload import placement


def is_causal_video_vae(vae) -> bool:
    """True for Wan's 3D causal VAE."""
    from diffusers import AutoencoderKLWan

    return isinstance(vae, AutoencoderKLWan)


def temporal_factor(vae_config) -> int:
    """Frames per latent frame after the first (Wan 2.1, HunyuanVideo, CogVideoX: 4; LTX-Video: 8,
    from its patch and scalings when its config leaves the ratio unset); 1 for a per-frame VAE."""
    if "z_dim" in vae_config:
        return int(vae_config.get("scale_factor_temporal") or 1)
    if "temporal_compression_ratio" in vae_config or "spatio_temporal_scaling" in vae_config:
        ratio = vae_config.get("temporal_compression_ratio")
        if ratio is None:  # LTX-Video (unset or absent): patch_size_t * 2 ** (its spatio-temporal scalings)
            ratio = vae_config.get("patch_size_t", 1) * 2 ** sum(vae_config.get("spatio_temporal_scaling", ()))
        return int(ratio)
    return 1


def latent_frame_count(frames: int, factor: int) -> int:
    """Latent frames of a clip of `frames` frames: 1 + (frames - 1) / factor."""
    return 1 + (frames - 1) // factor


def check_frame_count(frames: int, factor: int, what: str = "video.num_frames") -> None:
    """A one-line error unless `frames` is 1 + a multiple of `factor`, naming the nearest valid counts."""
    if factor <= 1 or frames >= 1 and (frames - 1) % factor == 0:
        return
    below = max(1, (frames - 1) // factor * factor + 1)
    above = below + factor
    raise VidinvError(
        f"{what}: {frames} frames cannot be encoded: the causal video VAE takes 1 + a multiple of {factor} frames"
        f" (nearest: {below} or {above})"
    )


def _statistics(vae, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents_mean, latents_std) as (c, 1, 1) float32 tensors."""
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=device)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=device)
    return mean[:, None, None], std[:, None, None]


def arrive(vae) -> None:
    """Bring the VAE to its execution device as diffusers' `apply_forward_hook` does before its own
    `encode` / `decode`: under model offload its accelerate hook sits on the VAE itself (moving the
    whole VAE when called), and the causal loops call its encoder, decoder and quant convs directly,
    which no hook of theirs would move. A no-op without a hook; under sequential offload every
    layer's own hook moves its weights."""
    hook = getattr(vae, "_hf_hook", None)
    if hook is not None and hasattr(hook, "pre_forward"):
        hook.pre_forward(vae)


class _TiledCausal:
    """The encoder or the decoder run one causal group at a time, tile by tile when the VAE tiles
    (diffusers' tile sizes and blending), each tile with its own feature cache."""

    def __init__(self, vae, part: str):
        self.vae, self.part = vae, part
        self.spatial = vae.config.scale_factor_spatial
        # Wan 2.2's VAE patchifies the frames (p x p pixels to channels) before its encoder and back
        # after its decoder: the encoder reads, the decoder writes, pixels of p x p patches (diffusers' units)
        self.patch = int(vae.config.get("patch_size") or 1)
        self.ratio = self.spatial // self.patch  # patched pixels per latent pixel
        self.caches: dict[tuple[int, int], list] = {}
        self.groups = 0  # causal groups run so far

    def _in_units(self, pixels: int) -> int:
        """A tile length in the input's units: pixels for the encoder, latent pixels for the decoder."""
        return pixels if self.part == "encoder" else pixels // self.spatial

    def _out_units(self, n: int) -> int:
        """An input length `n` in the output's units."""
        return n // self.ratio if self.part == "encoder" else n * self.ratio

    def _out_tile(self, pixels: int) -> int:
        """A sample-side tile length (diffusers' tile_sample_*) in the output's units: latent pixels
        for the encoder, (patched) pixels for the decoder."""
        return pixels // self.ratio if self.part == "encoder" else pixels // self.patch

    def _tiling(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """(tile height, tile width, stride height, stride width) in input units, or None: one tile."""
        vae = self.vae
        tile_h, tile_w = self._in_units(vae.tile_sample_min_height), self._in_units(vae.tile_sample_min_width)
        if not vae.use_tiling or (height <= tile_h and width <= tile_w):
            return None
        return (
            tile_h,
            tile_w,
            self._in_units(vae.tile_sample_stride_height),
            self._in_units(vae.tile_sample_stride_width),
        )

    def _run(self, x: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
        vae = self.vae
        if key not in self.caches:
            self.caches[key] = [None] * vae._cached_conv_counts[self.part]
        cache = self.caches[key]
        if self.part == "encoder":
            return vae.quant_conv(vae.encoder(x, feat_cache=cache, feat_idx=[0]))
        return vae.decoder(vae.post_quant_conv(x), feat_cache=cache, feat_idx=[0], first_chunk=self.groups == 0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """One causal group x (1 c t H W) -> its output (1 c' t' H' W'), tiles blended as diffusers does."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import patchify, unpatchify

        arrive(self.vae)
        if self.part == "encoder":
            x = patchify(x, patch_size=self.patch)
        tiling = self._tiling(*x.shape[-2:])
        out = self._run(x, (0, 0)) if tiling is None else self._tiled(x, tiling)
        self.groups += 1
        return unpatchify(out, patch_size=self.patch) if self.part == "decoder" else out

    def _tiled(self, x: torch.Tensor, tiling: tuple[int, int, int, int]) -> torch.Tensor:
        vae, (tile_h, tile_w, stride_h, stride_w), out = self.vae, tiling, self._out_units
        rows = [
            [self._run(x[..., i : i + tile_h, j : j + tile_w], (i, j)) for j in range(0, x.shape[-1], stride_w)]
            for i in range(0, x.shape[-2], stride_h)
        ]
        # blend and keep in the output's units from the sample-side tile sizes, as diffusers does (with
        # a patch, its decoder's blend is the patched tile minus the patched stride)
        side = self._out_tile
        blend_h = side(vae.tile_sample_min_height) - side(vae.tile_sample_stride_height)
        blend_w = side(vae.tile_sample_min_width) - side(vae.tile_sample_stride_width)
        keep_h, keep_w = side(vae.tile_sample_stride_height), side(vae.tile_sample_stride_width)
        result = []
        for i, row in enumerate(rows):
            kept = []
            for j, tile in enumerate(row):
                if i > 0:
                    tile = vae.blend_v(rows[i - 1][j], tile, blend_h)
                if j > 0:
                    tile = vae.blend_h(row[j - 1], tile, blend_w)
                kept.append(tile[..., :keep_h, :keep_w])
            result.append(torch.cat(kept, dim=-1))
        return torch.cat(result, dim=-2)[..., : out(x.shape[-2]), : out(x.shape[-1])]


class CausalEncoder:
    """Frames (k, 3, H, W) in [-1, 1], pushed in chunks of any size -> normalised latents (m, c, h, w)."""

    def __init__(self, vae):
        self.vae = vae
        self.factor = temporal_factor(vae.config)
        self.run = _TiledCausal(vae, "encoder")
        self.pending: list[torch.Tensor] = []
        self.frames = 0

    def _group(self) -> int:
        return 1 if self.run.groups == 0 else self.factor

    @torch.no_grad()
    def push(self, frames: torch.Tensor) -> torch.Tensor:
        """The latents of every causal group the frames so far complete (possibly none)."""
        vae = self.vae
        device, dtype = placement(vae)
        self.pending.extend(frames.unbind(0))
        self.frames += len(frames)
        outs = []
        while len(self.pending) >= self._group():
            group, self.pending = self.pending[: self._group()], self.pending[self._group() :]
            x = rearrange(torch.stack(group), "t c h w -> 1 c t h w").to(device=device, dtype=dtype)
            outs.append(self.run(x))
        if not outs:  # no group completed: no latents, on the device and in the dtype of the others
            h, w = (n // vae.config.scale_factor_spatial for n in frames.shape[-2:])
            return torch.empty(0, vae.config.z_dim, h, w, device=device, dtype=torch.float32)
        moments = torch.cat(outs, dim=2).float()
        mean_z = moments[:, : vae.config.z_dim]  # the posterior mean (deterministic, as encode_frames)
        latents_mean, latents_std = _statistics(vae, mean_z.device)
        return (rearrange(mean_z, "1 c t h w -> t c h w") - latents_mean) / latents_std

    def finish(self) -> None:
        """The end of the clip: a one-line error when its frame count is not 4k + 1."""
        if self.pending:
            check_frame_count(self.frames, self.factor, "the clip")


class CausalDecoder:
    """Normalised latents (m, c, h, w), pushed in order in chunks of any size -> frames (k, 3, H, W) in
    [-1, 1], float32 on the CPU (1 frame for the first latent frame, `factor` for each later one)."""

    def __init__(self, vae):
        self.vae = vae
        self.frames_per_latent = temporal_factor(vae.config)
        self.run = _TiledCausal(vae, "decoder")

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        device, dtype = placement(vae)
        latents_mean, latents_std = _statistics(vae, device)
        outs = []
        for z in latents:
            x = z.to(device=device, dtype=torch.float32) * latents_std + latents_mean
            outs.append(self.run(rearrange(x.to(dtype), "c h w -> 1 c 1 h w")))
        frames = torch.cat(outs, dim=2).clamp(-1, 1).float().cpu()
        return rearrange(frames, "1 c t h w -> t c h w")


__all__ = [
    "CausalDecoder",
    "CausalEncoder",
    "check_frame_count",
    "is_causal_video_vae",
    "latent_frame_count",
    "temporal_factor",
]
