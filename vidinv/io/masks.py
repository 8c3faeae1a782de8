"""An edit's mask read as its clip is read (`edit.mask`): a mask video, a folder of images or one image.

A video or folder has its frames selected as the clip's (`video.start`, `num_frames`, `stride`: a
mask video runs beside the source video) and fitted as the clip is (`video.height`, `width`,
`resize`; a mask of the source's own size takes the very same crop, one of another size is fitted
to the clip's frame size); one image is every frame's. White = the edit may change the pixel, black
= it may not, gray = partly (its level / 255). A mask has one channel: a grayscale image or video
(an RGB one whose channels agree); colours are refused. Errors are one line naming `key`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidinv.errors import VidinvError

# an RGB mask's channels may differ by this many 8-bit levels (a gray video through a lossy codec)
CHANNEL_TOLERANCE = 4


def read_mask(
    path: str | Path,
    video,
    *,
    size: tuple[int, int],
    source_size: tuple[int, int] | None = None,
    key: str = "edit.mask",
) -> torch.Tensor:
    """The mask at `path` as float32 (n, H, W) in [0, 1] (8-bit levels / 255), (H, W) = `size`, the
    clip's frame size; n = 1 for one image, else the frames selected as `video` (a VideoConfig)
    selects the clip's. `source_size`: the clip's size before fitting (a mask of that size is
    fitted exactly as the clip is); None: every mask is fitted to `size` with `video.resize`."""
    frames = read_mask_frames(path, video, size=size, source_size=source_size, key=key)
    return mask_levels(frames, size, f"{key} {path}")


def read_mask_frames(
    path: str | Path,
    video,
    *,
    size: tuple[int, int],
    source_size: tuple[int, int] | None = None,
    key: str = "edit.mask",
) -> torch.Tensor:
    """The mask's frames (n, 3, H, W) in [-1, 1], selected and fitted as `read_mask` says."""
    from vidinv.io.decoders import IMAGE_SUFFIXES
    from vidinv.io.reading import read_video
    from vidinv.io.stream import clip_stream

    path = Path(path)
    name = f"{key} {path}"
    if not path.exists():
        raise VidinvError(f"{name} does not exist")
    fit = dict(height=size[0], width=size[1])
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                picture = image.convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise VidinvError(f"{name}: not a readable image ({type(err).__name__})") from err
        if source_size is not None and picture.size[::-1] == tuple(source_size):
            fit = dict(height=video.height, width=video.width)
        wanted = None if fit["height"] is None and fit["width"] is None else (fit["height"], fit["width"])
        frames = read_video([picture], size=wanted, resize=video.resize).frames
    else:
        try:
            masks = clip_stream(dataclasses.replace(video, path=str(path)), 64)
            if source_size is None or tuple(masks.source_size) != tuple(source_size):
                masks = clip_stream(dataclasses.replace(video, path=str(path), **fit), 64)
            frames = torch.cat(list(masks.chunks()))
        except VidinvError as err:
            raise VidinvError(f"{key}: {err}") from None
    return frames


def mask_levels(frames: torch.Tensor, size: tuple[int, int], name: str = "edit.mask") -> torch.Tensor:
    """Mask frames (n, 3, H, W) in [-1, 1] -> (n, H, W) float32 8-bit levels / 255 (white 1, black 0
    exactly), after the one-channel and size checks."""
    levels = ((frames.float() + 1) * 127.5).round().clamp(0, 255)
    spread = (levels.amax(dim=1) - levels.amin(dim=1)).max() if len(levels) else torch.tensor(0.0)
    if float(spread) > CHANNEL_TOLERANCE:
        raise VidinvError(
            f"{name}: not one channel (its colour channels differ by up to {int(spread)} levels):"
            " give a grayscale mask, white where the edit may change the picture"
        )
    if tuple(levels.shape[-2:]) != tuple(size):
        h, w = levels.shape[-2:]
        raise VidinvError(f"{name} is {w}x{h} after fitting, the clip {size[1]}x{size[0]}")
    return levels[:, 0] / 255


def tensor_mask(mask, size: tuple[int, int], frames: int, name: str = "mask") -> torch.Tensor:
    """A mask given as a tensor ((n, H', W') or (H', W') in [0, 1], e.g. ComfyUI's MASK) as `read_mask`
    gives one: resized (bilinear) to `size` when it differs, clamped, on 8-bit levels; n = 1 or `frames`."""
    m = torch.as_tensor(mask).detach().float().cpu()
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or len(m) not in (1, frames):
        raise VidinvError(
            f"{name}: a mask must be (frames, H, W) or (H, W), one channel, with 1 or {frames} frames;"
            f" got {tuple(m.shape)}"
        )
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return (m.clamp(0, 1) * 255).round() / 255


def check_mask_frames(mask: torch.Tensor | np.ndarray, frames: int, name: str = "edit.mask") -> None:
    """A one-line error unless the mask has 1 frame (every frame's) or the clip's `frames`."""
    if len(mask) not in (1, frames):
        raise VidinvError(
            f"{name}: {len(mask)} frames selected, the clip {frames}: give one per frame of the clip"
            " (selected as video.start/num_frames/stride select the clip's), or one image"
        )


__all__ = ["check_mask_frames", "mask_levels", "read_mask", "tensor_mask"]
