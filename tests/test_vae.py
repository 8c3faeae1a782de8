"""Chunked VAE encode/decode (vidinv.models.vae) equals the whole-clip call, on the tiny model."""

from __future__ import annotations

import pytest
import torch

from vidinv.models import decode_latents, encode_frames

NUM_FRAMES, HEIGHT, WIDTH = 5, 32, 48
CHUNKS = [2, 5, 0]  # 2 does not divide 5, 5 is the whole clip in one chunk, 0 means unchunked


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """Seeded random frames in [-1, 1] (f, 3, H, W)."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(NUM_FRAMES, 3, HEIGHT, WIDTH, generator=generator) * 2 - 1


@pytest.fixture(scope="module")
def whole_clip_latents(tiny_models, frames) -> torch.Tensor:
    return encode_frames(tiny_models.vae, frames, chunk=None)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_chunked_encode_equals_whole_clip_encode(tiny_models, frames, whole_clip_latents, chunk):
    latents = encode_frames(tiny_models.vae, frames, chunk=chunk)
    torch.testing.assert_close(latents, whole_clip_latents, rtol=0, atol=1e-5)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_chunked_decode_equals_whole_clip_decode(tiny_models, whole_clip_latents, chunk):
    decoded = decode_latents(tiny_models.vae, whole_clip_latents, chunk=chunk)
    expected = decode_latents(tiny_models.vae, whole_clip_latents, chunk=None)
    torch.testing.assert_close(decoded, expected, rtol=0, atol=1e-5)


def test_encode_gives_f_4_h8_w8_latents_scaled_by_the_vae_factor(tiny_models, frames, whole_clip_latents):
    vae = tiny_models.vae
    assert whole_clip_latents.shape == (NUM_FRAMES, vae.config.latent_channels, HEIGHT // 8, WIDTH // 8)
    assert vae.config.latent_channels == 4
    with torch.no_grad():
        posterior_mean = vae.encode(frames).latent_dist.mean
    torch.testing.assert_close(whole_clip_latents, posterior_mean * vae.config.scaling_factor, rtol=0, atol=1e-5)


def test_decode_gives_frames_at_8x_in_range_that_undo_the_scaling(tiny_models, whole_clip_latents):
    vae = tiny_models.vae
    decoded = decode_latents(vae, whole_clip_latents)
    assert decoded.shape == (NUM_FRAMES, 3, HEIGHT, WIDTH) and decoded.dtype == torch.float32
    assert decoded.min() >= -1 and decoded.max() <= 1
    with torch.no_grad():
        direct = vae.decode(whole_clip_latents / vae.config.scaling_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(decoded, direct, rtol=0, atol=1e-5)


# Tiling (diffusers' tiled AutoencoderKL, 64-px tiles overlapping by a quarter). Tiles are not
# exact: each tile has its own GroupNorm statistics and mid-block attention. Measured with the tiny
# random-weight VAE on 4 frames of samples/bikes.mp4, tiled vs untiled PSNR (over the untiled
# range): latents 20.1-21.5 dB, decoded frames 15.3-17.1 dB at 64x128 and 128x192 (overlap 0 to
# 0.5 changes them by < 2 dB). The bounds sit ~2 dB below the lowest measurement.
TILE = 64
MIN_TILED_LATENT_PSNR_DB, MIN_TILED_DECODE_PSNR_DB = 18.0, 13.0


def psnr_db(value: torch.Tensor, reference: torch.Tensor) -> float:
    span = reference.max() - reference.min()
    return float(10 * torch.log10(span**2 / (value - reference).pow(2).mean()))


@pytest.fixture(scope="module")
def large_frames(sample_path) -> torch.Tensor:
    """Real frames 2 x 3 tiles large."""
    from vidinv.io import read_video

    return read_video(sample_path, num_frames=2, size=(2 * TILE, 3 * TILE)).frames


def test_tiling_leaves_frames_no_larger_than_a_tile_unchanged(tiny_models, frames, whole_clip_latents):
    tiled = encode_frames(tiny_models.vae, frames, tile_size=TILE)
    torch.testing.assert_close(tiled, whole_clip_latents, rtol=0, atol=0)
    decoded = decode_latents(tiny_models.vae, whole_clip_latents, tile_size=TILE)
    torch.testing.assert_close(decoded, decode_latents(tiny_models.vae, whole_clip_latents), rtol=0, atol=0)


def test_tiled_encode_and_decode_of_large_frames_stay_within_the_measured_psnr(tiny_models, large_frames):
    vae = tiny_models.vae
    latents, tiled_latents = encode_frames(vae, large_frames), encode_frames(vae, large_frames, tile_size=TILE)
    assert tiled_latents.shape == latents.shape and not torch.equal(tiled_latents, latents)  # tiles were used
    assert psnr_db(tiled_latents, latents) >= MIN_TILED_LATENT_PSNR_DB
    decoded, tiled_decoded = decode_latents(vae, latents), decode_latents(vae, latents, tile_size=TILE)
    assert tiled_decoded.shape == decoded.shape and not torch.equal(tiled_decoded, decoded)
    assert psnr_db(tiled_decoded, decoded) >= MIN_TILED_DECODE_PSNR_DB


def test_a_call_with_tile_size_restores_the_vaes_own_tiling(tiny_models, large_frames):
    vae = tiny_models.vae
    before = vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size
    encode_frames(vae, large_frames, tile_size=TILE)
    assert (vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size) == before


def test_runtime_vae_tiling_tiles_the_loaded_vae_at_the_configured_size():
    from vidinv.config import config_from_dict
    from vidinv.jobs.common import load_models_for

    vae = load_models_for(config_from_dict({"runtime": {"vae_tiling": True, "vae_tile_size": 128}})).vae
    assert vae.use_tiling and (vae.tile_sample_min_size, vae.tile_latent_min_size) == (128, 16)
