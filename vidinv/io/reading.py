"""`read_video`: a video file, an image folder or an in-memory clip -> `Video` with frames (f, 3, H, W) in [-1, 1]."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from vidinv.chunks import frame_slices
from vidinv.errors import VidinvError
from vidinv.io.arrays import NAME as IN_MEMORY
from vidinv.io.arrays import in_memory_pictures, select_pictures
from vidinv.io.decoders import DECODERS, Decoded, DecodeFailed, check_video_file, decode, decord_available
from vidinv.io.images import read_image_folder
from vidinv.io.resize import RESIZE_MODES, center_crop, check_size, resize_frames, target_size
from vidinv.io.selection import FrameSelection
from vidinv.io.video import Video, frames_from_uint8

FOLDER_FPS = 8.0  # frame rate of an image folder unless `fps=` says otherwise
RESIZE_CHUNK = 16  # frames converted to float and resized at a time (bounds the float copies)


def read_video(
    path,
    *,
    start: int = 0,
    num_frames: int | None = None,
    stride: int = 1,
    size: tuple[int | None, int | None] | None = None,
    resize: str = "center_crop",
    decoder: str = "auto",
    fps: float = FOLDER_FPS,
) -> Video:
    """Read frames start, start + stride, ... (at most `num_frames`; None = to the end).

    path: a video file, or a folder of images (png/jpg/jpeg/bmp/webp, natural name order) whose
    frame rate is `fps` (default 8.0; video files carry their own), or the clip itself: a uint8
    array (f, H, W, 3) or a list of PIL images (frame rate `fps`; `Video.path` is None). size: (height, width),
    multiples of 8, either may be None (derived by aspect ratio); None = the source size rounded
    down to multiples of 8. resize: "center_crop" | "stretch" | "pad" (see `vidinv.io.resize`).
    decoder: "auto" (decord when importable, else or on failure PyAV) | "decord" | "pyav".
    The returned fps is the source's divided by `stride`. Bad input raises `VidinvError`.
    """
    pictures = in_memory_pictures(path)
    path = None if pictures is not None else Path(path)
    name = IN_MEMORY if path is None else path
    selection = FrameSelection(start=start, num_frames=num_frames, stride=stride)
    selection.check(name)
    _check_options(name, resize, decoder)
    check_size(size, name)  # reject bad sizes before decoding anything
    if pictures is None:
        decoded = _decode(path, selection, decoder, fps)
    else:
        decoded = select_pictures(pictures, selection, fps)
    selection.note_if_short(name, len(decoded.pictures))
    source_size = tuple(decoded.pictures.shape[1:3])
    height, width = target_size(source_size, size, name)
    if size is None or size == (None, None):  # only crop to multiples of 8, no resampling
        fit = partial(center_crop, size=(height, width))
    else:
        fit = partial(resize_frames, size=(height, width), mode=resize)
    frames = torch.empty(len(decoded.pictures), 3, height, width)
    for part in frame_slices(len(frames), RESIZE_CHUNK):
        frames[part] = fit(frames_from_uint8(decoded.pictures[part]))
    return Video(frames=frames, fps=decoded.fps / stride, source_size=source_size, path=path)


def _check_options(path: Path, resize: str, decoder: str) -> None:
    if resize not in RESIZE_MODES:
        raise VidinvError(f"{path}: resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    if decoder not in DECODERS:
        raise VidinvError(f"{path}: decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if decoder == "decord" and not decord_available():
        raise VidinvError(
            f"{path}: decoder='decord' but decord is not installed (pip install decord, or decoder='pyav')"
        )


def _decode(path: Path, selection: FrameSelection, decoder: str, fps: float) -> Decoded:
    if not path.exists():
        raise VidinvError(f"{path}: no such file or folder")
    if path.is_dir():
        decoded = read_image_folder(path, selection, fps)
    else:
        check_video_file(path)
        try:
            decoded = decode(path, selection, decoder)
        except DecodeFailed as err:
            raise VidinvError(f"{path}: cannot be decoded as a video ({err})") from None
    if len(decoded.pictures):
        return decoded
    if decoded.total == 0:
        raise VidinvError(f"{path}: no decodable frames")
    raise VidinvError(f"{path}: start {selection.start} is past the end (it has {decoded.total} frames)")
