"""The decoded clip and conversions between float frames and 8-bit pictures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from vidinv.errors import VidinvError


@dataclass
class Video:
    """A decoded clip.

    frames: float32 (f, 3, H, W) in [-1, 1]; fps: the source's frame rate divided by the stride;
    source_size: (height, width) before resizing; path: where it was read from (None: from memory).
    """

    frames: torch.Tensor
    fps: float
    source_size: tuple[int, int]
    path: Path | None

    def __len__(self) -> int:
        return len(self.frames)


def frames_to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float frames (f, 3, H, W) in [-1, 1] -> uint8 pictures (f, H, W, 3); uint8 arrays pass through."""
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise VidinvError(f"uint8 frames must have shape (f, H, W, 3), got {tuple(frames.shape)}")
        return frames
    frames = torch.as_tensor(frames)
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise VidinvError(f"frames must have shape (f, 3, H, W), got {tuple(frames.shape)}")
    pixels = ((frames.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return rearrange(pixels, "f c h w -> f h w c").numpy()


def frames_from_uint8(pictures: np.ndarray) -> torch.Tensor:
    """uint8 pictures (f, H, W, 3) -> float32 frames (f, 3, H, W) in [-1, 1]."""
    pixels = rearrange(torch.from_numpy(np.ascontiguousarray(pictures)), "f h w c -> f c h w")
    return pixels.float() / 127.5 - 1


def side_by_side(*clips: torch.Tensor | Video) -> torch.Tensor:
    """Clips (f, 3, H, W) of equal length and height, placed left to right: (f, 3, H, sum of W)."""
    frames = [clip.frames if isinstance(clip, Video) else clip for clip in clips]
    if not frames:
        raise VidinvError("side_by_side needs at least one clip")
    shapes = {(len(f), f.shape[-2]) for f in frames}
    if len(shapes) != 1:
        raise VidinvError(f"side_by_side needs clips of equal length and height, got (frames, height) {sorted(shapes)}")
    return torch.cat(frames, dim=-1)
