"""Metrics: PSNR conventions and the flow-warp temporal consistency error."""

from __future__ import annotations

import math

import torch

from vidinv.metrics import psnr, psnr_per_frame, source_flows, warp_error


def test_psnr_of_known_error_matches_the_formula():
    a = torch.zeros(2, 3, 4, 4)
    b = a + 0.02  # mse 4e-4 over a range of 2 -> 10*log10(4 / 4e-4) = 40 dB
    assert torch.allclose(psnr_per_frame(a, b), torch.full((2,), 40.0, dtype=torch.float64))
    assert math.isclose(psnr(a, b), 40.0, rel_tol=1e-6)


def textured_clip(shift: int, frames: int = 4, size: int = 64) -> torch.Tensor:
    """A smooth random texture that moves `shift` pixels to the right each frame."""
    torch.manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 24), size=(size, size + shift * frames), mode="bicubic")
    return torch.cat([base[..., shift * (frames - i) : shift * (frames - i) + size] for i in range(frames)]) * 2 - 1


def test_warp_error_is_zero_for_a_static_clip():
    clip = textured_clip(0)
    assert warp_error(clip, source_flows(clip)) < 1e-3  # below one 8-bit grey level (1/255)


def test_warp_along_the_source_flow_explains_motion():
    clip = textured_clip(2)
    flows = source_flows(clip)
    naive = float((clip[1:] - clip[:-1]).abs().mean() / 2)  # what the error is without warping
    assert warp_error(clip, flows) < 0.35 * naive


def test_warp_error_is_large_for_a_clip_that_flickers_against_the_source_motion():
    clip = textured_clip(2)
    flows = source_flows(clip)
    flicker = clip.clone()
    flicker[1::2] = -flicker[1::2]
    assert warp_error(flicker, flows) > 5 * warp_error(clip, flows)
