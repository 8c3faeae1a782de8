"""In-memory clips: a uint8 array (f h w c) or a list of PIL images, selected like a file's frames."""

from __future__ import annotations

import numpy as np

from vidinv.errors import VidinvError
from vidinv.io.decoders import Decoded
from vidinv.io.selection import FrameSelection

NAME = "frames"  # how errors name an in-memory clip


def in_memory_pictures(source) -> np.ndarray | None:
    """uint8 pictures (f, H, W, 3) of an array or a list of PIL images; None for anything else (a path)."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim != 4 or source.shape[-1] != 3:
            raise VidinvError(f"{NAME}: an array clip must be uint8 (f, H, W, 3), got {source.dtype} {source.shape}")
        return source
    if isinstance(source, (list, tuple)) and source and all(hasattr(im, "convert") for im in source):
        pictures = [np.asarray(image.convert("RGB")) for image in source]
        sizes = sorted({p.shape[:2] for p in pictures})
        if len(sizes) > 1:
            raise VidinvError(f"{NAME}: images differ in size ({', '.join(f'{h}x{w}' for h, w in sizes)})")
        return np.stack(pictures)
    if isinstance(source, (list, tuple)):
        raise VidinvError(f"{NAME}: a list clip must be a non-empty list of PIL images")
    return None


def select_pictures(pictures: np.ndarray, selection: FrameSelection, fps: float) -> Decoded:
    """The selected pictures of an in-memory clip (`Decoded`, as a decoder returns them)."""
    total = len(pictures)
    if selection.start >= total:
        raise VidinvError(f"{NAME}: start {selection.start} is past the end (it has {total} frames)")
    return Decoded(pictures[selection.indices(total)], fps, total)
