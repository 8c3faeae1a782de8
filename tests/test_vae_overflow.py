"""A half-precision VAE that overflows (the SDXL VAE in fp16) is decoded again in fp32, chunk by
chunk, and left in its dtype; a VAE that does not overflow is decoded as it is (issue 13, item 3)."""

from __future__ import annotations

import copy

import torch

from vidinv.models import decode_latents, encode_frames, load_models

LATENTS = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def half_vae(gain: float):
    vae = copy.deepcopy(load_models("tiny-sdxl", device="cpu").vae)
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(gain)  # activations beyond fp16's 65504 for a large gain
    return vae.half()


def test_an_overflowing_fp16_decode_is_redone_in_fp32():
    vae = half_vae(3e4)
    raw = vae.decode((LATENTS[:1] / vae.config.scaling_factor).half()).sample
    assert not torch.isfinite(raw).all()  # the planted overflow
    out = decode_latents(vae, LATENTS, 2)
    reference = decode_latents(copy.deepcopy(vae).float(), LATENTS, 2)
    assert torch.isfinite(out).all() and torch.equal(out, reference)
    assert next(vae.parameters()).dtype == torch.float16  # back in its dtype


def test_a_finite_fp16_decode_is_kept_in_fp16():
    vae = half_vae(1.0)
    plain = torch.cat([vae.decode(z[None].half() / vae.config.scaling_factor).sample for z in LATENTS])
    assert torch.equal(decode_latents(vae, LATENTS, 1), plain.clamp(-1, 1).float())


def test_an_overflowing_fp16_encode_is_redone_in_fp32():
    vae = copy.deepcopy(load_models("tiny-sdxl", device="cpu").vae)
    with torch.no_grad():
        vae.encoder.conv_in.weight.fill_(1e4)  # fits fp16; its sums over 27 inputs do not
    vae = vae.half()
    frames = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # positive pixels
    assert not torch.isfinite(vae.encode(frames.half()).latent_dist.mean).all()  # the planted overflow
    out = encode_frames(vae, frames, 1)
    assert torch.isfinite(out).all() and torch.equal(out, encode_frames(copy.deepcopy(vae).float(), frames, 1))
    assert next(vae.parameters()).dtype == torch.float16
