"""Output size and resizing of frames.

Resampling is torch's antialiased bicubic interpolation (`F.interpolate(mode="bicubic",
antialias=True)`), clamped back to [-1, 1]. Modes: "center_crop" scales to cover the target and
crops the middle, "stretch" resizes to the target ignoring the aspect ratio, "pad" scales to fit
inside the target and pads with black.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidinv.errors import VidinvError

MULTIPLE = 8
MAX_PIXELS = 8192 * 8192  # the largest frame resizing may make, on the way to the target or as it
RESIZE_MODES = ("center_crop", "stretch", "pad")
BLACK = -1.0


def _round_down(value: float) -> int:
    return int(value) // MULTIPLE * MULTIPLE


def check_size(size: tuple[int | None, int | None] | None, path="video") -> None:
    """A requested (height, width): entries None or multiples of 8 (>= 8)."""
    if size is None:
        return
    if len(size) != 2:
        raise VidinvError(f"{path}: size must be (height, width), got {size!r}")
    for name, value in zip(("height", "width"), size):
        if value is not None and (int(value) != value or value < MULTIPLE or value % MULTIPLE):
            raise VidinvError(f"{path}: {name} {value} must be a multiple of {MULTIPLE} (>= {MULTIPLE})")


def target_size(source: tuple[int, int], size: tuple[int | None, int | None] | None, path="video") -> tuple[int, int]:
    """(height, width) to produce from a source of (height, width).

    size=None: the source size rounded down to multiples of 8. One entry None: derived from the
    other by the source aspect ratio, rounded down to a multiple of 8. Given entries must be
    multiples of 8.
    """
    check_size(size, path)
    src_h, src_w = source
    height, width = size or (None, None)
    if height is None and width is None:
        height, width = _round_down(src_h), _round_down(src_w)
    elif width is None:
        width = _round_down(height * src_w / src_h)
    elif height is None:
        height = _round_down(width * src_h / src_w)
    if height < MULTIPLE or width < MULTIPLE:
        raise VidinvError(f"{path}: size {size} from a {src_h}x{src_w} source gives {height}x{width}, below {MULTIPLE}")
    return int(height), int(width)


def _interpolate(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)


def resize_frames(frames: torch.Tensor, size: tuple[int, int], mode: str = "center_crop") -> torch.Tensor:
    """frames (f, 3, H, W) -> (f, 3, height, width) by `mode` (see the module docstring)."""
    if mode not in RESIZE_MODES:
        raise VidinvError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    (src_h, src_w), (height, width) = frames.shape[-2:], size
    if mode == "stretch":
        return _interpolate(frames, size)
    # center_crop: cover the target (each side >= it); pad: fit inside it (each side <= it).
    cover = mode == "center_crop"
    bound = max if cover else min
    scale = bound(height / src_h, width / src_w)
    scaled_h = max(1, bound(height, round(src_h * scale)))
    scaled_w = max(1, bound(width, round(src_w * scale)))
    if scaled_h * scaled_w > MAX_PIXELS:
        raise VidinvError(
            f"resizing {src_h}x{src_w} frames to {height}x{width} ({mode}) would go through {scaled_h}x{scaled_w}"
            f" frames, more than {MAX_PIXELS:,} pixels (choose a size closer to the source's aspect ratio)"
        )
    scaled = _interpolate(frames, (scaled_h, scaled_w))
    if cover:
        return center_crop(scaled, size)
    top, left = (height - scaled_h) // 2, (width - scaled_w) // 2
    return F.pad(scaled, (left, width - scaled_w - left, top, height - scaled_h - top), value=BLACK)


def center_crop(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The middle (height, width) of frames (f, 3, H, W), no resampling."""
    (src_h, src_w), (height, width) = frames.shape[-2:], size
    top, left = (src_h - height) // 2, (src_w - width) // 2
    return frames[..., top : top + height, left : left + width]
