"""Clip metrics: PSNR (per frame and mean), on tensors in a known value range."""

from __future__ import annotations

import torch
from einops import reduce


def psnr_per_frame(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """PSNR in dB of each frame of a and b (f ...), for values spanning `data_range` ([-1, 1] -> 2)."""
    diff = (a.double().cpu() - b.double().cpu()) ** 2
    mse = reduce(diff, "f ... -> f", "mean").clamp_min(1e-30)
    return 10 * torch.log10(data_range**2 / mse)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> float:
    """Mean over frames of the per-frame PSNR in dB."""
    return float(psnr_per_frame(a, b, data_range).mean())
