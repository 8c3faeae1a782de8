"""`write_video`: frames -> .mp4 (H.264), .gif, or a folder of PNGs, always written atomically.

mp4: libx264, yuv420p, crf 18, through PyAV. yuv420p needs even sizes, so an odd height or
width is padded by one row/column repeating the edge pixels. gif: PyAV's gif encoder with a
per-frame 256-colour palette (median cut, no dithering). png: `frame_00000.png`, ... in a folder.
The file (or folder) appears under its final name only once complete (`vidinv.outputs.atomic_path`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vidinv.errors import VidinvError
from vidinv.io.video import frames_to_uint8
from vidinv.outputs import atomic_path

FORMATS = ("mp4", "gif", "png")
MP4_OPTIONS = {"crf": "18", "preset": "medium"}
PNG_NAME = "frame_{:05d}.png"

Frames = torch.Tensor | np.ndarray


def video_format(path: Path, format: str | None = None) -> str:
    """The format `write_video` uses: `format`, else by extension (none = a PNG folder)."""
    fmt = format or {"": "png", ".mp4": "mp4", ".gif": "gif"}.get(path.suffix.lower())
    if fmt not in FORMATS:
        raise VidinvError(f"{path}: cannot tell the video format (use .mp4, .gif, no suffix for PNGs, or format=)")
    return fmt


def write_video(path: str | Path, frames: Frames | Iterable[Frames], fps: float, *, format: str | None = None) -> Path:
    """Write frames (f, 3, H, W) floats in [-1, 1] or uint8 (f, H, W, 3) at `fps`.

    `frames` may also be an iterable of such chunks, written as they come (long clips need not
    be in memory at once). format: "mp4" | "gif" | "png"; None = by the path's extension.
    """
    path = Path(path)
    fmt = video_format(path, format)
    if not fps or fps <= 0:
        raise VidinvError(f"{path}: fps must be > 0, got {fps}")
    chunks = [frames] if isinstance(frames, (torch.Tensor, np.ndarray)) else frames
    pictures = (picture for chunk in chunks for picture in frames_to_uint8(chunk))
    with atomic_path(path) as tmp:
        count = WRITERS[fmt](tmp, pictures, fps)
        if count == 0:
            raise VidinvError(f"{path}: no frames to write")
    return path


def _even(picture: np.ndarray) -> np.ndarray:
    height, width = picture.shape[:2]
    return np.pad(picture, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def _h264_frame(picture: np.ndarray):
    import av

    return av.VideoFrame.from_ndarray(_even(picture), format="rgb24")


def _palette_frame(picture: np.ndarray):
    import av

    quantized = Image.fromarray(picture).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    rgb = np.zeros((256, 3), np.uint8)
    used = np.asarray(quantized.getpalette(), np.uint8).reshape(-1, 3)[:256]
    rgb[: len(used)] = used
    argb = np.concatenate([np.full((256, 1), 255, np.uint8), rgb], axis=1)  # PyAV's pal8 palette: (256, ARGB)
    return av.VideoFrame.from_ndarray((np.asarray(quantized), argb), format="pal8")


@dataclass(frozen=True)
class Encoding:
    container: str
    codec: str
    pix_fmt: str
    options: dict
    to_frame: Callable[[np.ndarray], object]  # uint8 (H, W, 3) -> av.VideoFrame

    def __call__(self, tmp: Path, pictures: Iterable[np.ndarray], fps: float) -> int:
        """Encode with PyAV; returns the frame count. The stream is sized by the first frame."""
        import av

        count, stream = 0, None
        with av.open(str(tmp), "w", format=self.container) as container:
            for count, picture in enumerate(pictures, start=1):
                frame = self.to_frame(picture)
                if stream is None:
                    stream = container.add_stream(self.codec, rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, self.pix_fmt
                    stream.options = dict(self.options)
                container.mux(stream.encode(frame))
            if stream is not None:
                container.mux(stream.encode(None))
        return count


def _write_pngs(tmp: Path, pictures: Iterable[np.ndarray], fps: float) -> int:
    tmp.mkdir(parents=True)
    count = 0
    for count, picture in enumerate(pictures, start=1):
        Image.fromarray(picture).save(tmp / PNG_NAME.format(count - 1))
    return count


WRITERS = {
    "mp4": Encoding("mp4", "libx264", "yuv420p", MP4_OPTIONS, _h264_frame),
    "gif": Encoding("gif", "gif", "pal8", {}, _palette_frame),
    "png": _write_pngs,
}
