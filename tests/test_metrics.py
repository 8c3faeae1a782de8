"""Metrics: PSNR conventions, the flow-warp temporal consistency error, SSIM, flicker and the unedited region."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from vidinv.metrics import (
    compare_clips,
    flicker_per_pair,
    psnr,
    psnr_per_frame,
    source_flows,
    ssim_8bit,
    ssim_map,
    warp_error,
)


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


# --- SSIM, flicker and the unedited region (issue 33) ------------------------------------------------------------


def pictures(frames: int = 3, h: int = 40, w: int = 56, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random clip of uint8 pictures and a noisy copy of it."""
    rng = np.random.default_rng(seed)
    base = np.stack([cv2.resize(rng.random((6, 8, 3)), (w, h), interpolation=cv2.INTER_CUBIC) for _ in range(frames)])
    clean = (base.clip(0, 1) * 255).round().astype(np.uint8)
    noisy = (clean + rng.normal(0, 12, clean.shape)).round().clip(0, 255).astype(np.uint8)
    return clean, noisy


def test_ssim_is_scikit_images_wang_et_al_ssim():
    """scikit-image's SSIM with the paper's settings (its docs: gaussian_weights, sigma 1.5, no
    sample covariance) as the reference, per channel; identical pictures score exactly 1."""
    from skimage.metrics import structural_similarity

    clean, noisy = pictures()
    for a, b in zip(clean, noisy):
        want = structural_similarity(
            a, b, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert abs(ssim_8bit(a, b) - want) < 1e-12 and 0.3 < want < 0.99
        assert ssim_8bit(a, a) == 1.0
    assert math.isnan(ssim_8bit(clean[0, :10], noisy[0, :10]))  # under one 11x11 window: undefined (null)


def test_flicker_is_the_mean_change_of_the_gaussian_blurred_luma():
    from scipy.ndimage import gaussian_filter

    clean, _ = pictures(frames=4)
    luma = (clean.astype(np.float64) / 255) @ np.array([0.299, 0.587, 0.114])
    smooth = np.stack([gaussian_filter(frame, sigma=2.0, truncate=3.0, mode="reflect") for frame in luma])
    want = [float(np.abs(smooth[i + 1] - smooth[i]).mean()) for i in range(3)]
    assert np.allclose(flicker_per_pair(clean), want, rtol=0, atol=1e-14)
    steady = np.repeat(clean[:1], 4, axis=0)
    assert flicker_per_pair(steady) == [0.0] * 3


def test_the_unedited_region_is_compared_outside_the_mask():
    from vidinv.io.video import frames_from_uint8

    clean, noisy = pictures()
    mask = np.zeros((1, *clean.shape[1:3]), dtype=bool)
    mask[:, 8:30, 10:40] = True  # the edited region
    edited = clean.copy()
    edited[:, 8:30, 10:40] = noisy[:, 8:30, 10:40]  # an edit inside the mask only
    metrics = compare_clips(frames_from_uint8(clean), frames_from_uint8(edited), mask=mask)
    assert metrics["psnr_unedited_db"] == math.inf and metrics["ssim_unedited"] == 1.0  # untouched outside
    assert metrics["psnr_vs_source_db"] < 40 and metrics["ssim_vs_source"] < 1
    assert metrics["unedited_fraction"] == pytest.approx(1 - 22 * 30 / (40 * 56))
    # everywhere noisy: the unedited PSNR is the one of the pixels outside the mask, SSIM the map's mean over
    # the 11x11 windows wholly outside it
    metrics = compare_clips(frames_from_uint8(clean), frames_from_uint8(noisy), mask=mask)
    keep = ~mask[0]
    sq = (noisy.astype(np.int64) - clean.astype(np.int64)) ** 2
    want = np.mean([10 * np.log10(255**2 / frame[keep].mean()) for frame in sq])
    assert metrics["psnr_unedited_db"] == pytest.approx(want, rel=1e-12)
    outside = np.ones((40 - 10, 56 - 10), dtype=bool)  # the map's window i covers picture rows i..i+10
    outside[max(0, 8 - 10) : 30, max(0, 10 - 10) : 40] = False
    want = np.mean([ssim_map(n, c)[outside].mean() for n, c in zip(noisy, clean)])
    assert metrics["ssim_unedited"] == pytest.approx(want, rel=1e-12)
    # no mask pixel set: the unedited metrics are the whole frame's
    whole = compare_clips(frames_from_uint8(clean), frames_from_uint8(noisy), mask=np.zeros_like(mask))
    assert whole["psnr_unedited_db"] == pytest.approx(whole["psnr_vs_source_db"], rel=1e-12)
    assert whole["ssim_unedited"] == pytest.approx(whole["ssim_vs_source"], rel=1e-12)
    assert whole["unedited_fraction"] == 1.0
    everything = compare_clips(frames_from_uint8(clean), frames_from_uint8(noisy), mask=np.ones_like(mask))
    assert math.isnan(everything["psnr_unedited_db"]) and math.isnan(everything["ssim_unedited"])  # null in JSON
