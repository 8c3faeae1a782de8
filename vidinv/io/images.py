"""Folders of images read as a clip: png/jpg/jpeg/bmp/webp files in natural name order."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from vidinv.errors import VidinvError
from vidinv.io.decoders import IMAGE_SUFFIXES, Decoded, empty_pictures
from vidinv.io.selection import FrameSelection


def natural_key(name: str) -> list:
    """Sort key where digit runs compare as numbers: frame2 < frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise VidinvError(f"{folder}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=lambda p: natural_key(p.name))


def _load(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as err:
        raise VidinvError(f"{path}: cannot be read as an image ({type(err).__name__})") from err


def read_image_folder(folder: Path, selection: FrameSelection, fps: float) -> Decoded:
    """Only the selected files are opened; all must have the same size."""
    files = list_images(folder)
    pictures = [_load(files[i]) for i in selection.indices(len(files))]
    sizes = {p.shape for p in pictures}
    if len(sizes) > 1:
        raise VidinvError(f"{folder}: images differ in size ({', '.join(f'{h}x{w}' for h, w, _ in sorted(sizes))})")
    return Decoded(np.stack(pictures) if pictures else empty_pictures(), fps, len(files))
