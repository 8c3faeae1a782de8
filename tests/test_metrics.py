"""Metrics: PSNR conventions and the flow-warp temporal consistency error."""

from __future__ import annotations

import math

import pytest
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


@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_streamed_comparison_over_chunks_equals_the_whole_clip_comparison(sample_path, chunk):
    from vidinv.io import read_video
    from vidinv.metrics import ClipComparison, compare_clips

    source = read_video(sample_path, num_frames=7, size=(64, 96)).frames
    edited = (source + 0.1 * torch.randn(source.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    streamed = ClipComparison()
    for start in range(0, len(source), chunk):
        streamed.update(source[start : start + chunk], edited[start : start + chunk])
    whole = compare_clips(source, edited)
    assert streamed.result().keys() == whole.keys()
    for key, value in streamed.result().items():
        assert value == pytest.approx(whole[key], rel=1e-6, abs=1e-9), key
