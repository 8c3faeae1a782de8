"""Chunked VAE encode/decode (vidinv.models.vae) equals the whole-clip call, on the tiny model."""

from __future__ import annotations

import pytest
import torch

from vidinv.models import decode_latents, encode_frames

NUM_FRAMES, HEIGHT, WIDTH = 5, 32, 48
CHUNKS = [2, 5, 0]  # 2 does not divide 5, 5 is the whole clip in one chunk, 0 means unchunked


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions run ~50x slower with 2 OpenMP threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
