"""Frame decoders: decord (random access by index) and PyAV (sequential, stops after the last frame wanted).

Each returns `Decoded`: the selected pictures as uint8 (n, H, W, 3), the source fps and how many
frames the source has (for PyAV: how many it decoded, exact when nothing was selected).
Decoder exceptions are turned into `DecodeFailed`, never let out raw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidinv.errors import first_line
from vidinv.io.selection import FrameSelection

DECODERS = ("auto", "decord", "pyav")
DEFAULT_FPS = 25.0  # when a container states no frame rate


@dataclass
class Decoded:
    pictures: np.ndarray  # uint8 (n, H, W, 3)
    fps: float
    total: int


class DecodeFailed(Exception):
    """A decoder could not open or read the file; the message is the decoder's first line."""


_LOG_PREFIX = re.compile(r"^(\[[\d:]+\] \S+: |\[Errno -?\d+\] )")


def _first_line(err: BaseException) -> str:
    """The decoder's message, first line, without decord's log prefix or PyAV's errno."""
    return _LOG_PREFIX.sub("", first_line(err))[:200]


def empty_pictures() -> np.ndarray:
    return np.zeros((0, 0, 0, 3), dtype=np.uint8)


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except (ImportError, OSError):  # not installed, or its bundled libraries fail to load
        return False
    return True


def decode_decord(path: Path, selection: FrameSelection) -> Decoded:
    try:
        import decord

        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        total, fps = len(reader), float(reader.get_avg_fps() or DEFAULT_FPS)
        indices = selection.indices(total)
        pictures = reader.get_batch(indices).asnumpy() if indices else empty_pictures()
    except Exception as err:
        raise DecodeFailed(_first_line(err)) from err
    return Decoded(pictures, fps, total)


def _pyav_pictures(container, stream):
    """Decoded rgb24 frames in order; packets the codec rejects are skipped (as ffmpeg does)."""
    import av

    for packet in container.demux(stream):
        try:
            frames = stream.decode(packet)
        except av.error.InvalidDataError:
            continue
        yield from frames


def decode_pyav(path: Path, selection: FrameSelection) -> Decoded:
    import av

    pictures, count = [], 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeFailed("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else DEFAULT_FPS
            for count, frame in enumerate(_pyav_pictures(container, stream), start=1):
                if selection.wants(count - 1):
                    pictures.append(frame.to_ndarray(format="rgb24"))
                if selection.last is not None and count > selection.last:
                    break
    except DecodeFailed:
        raise
    except Exception as err:
        raise DecodeFailed(_first_line(err)) from err
    return Decoded(np.stack(pictures) if pictures else empty_pictures(), fps, count)


def decode(path: Path, selection: FrameSelection, decoder: str = "auto") -> Decoded:
    """Decode with `decoder`; "auto" tries decord when importable, then PyAV."""
    if decoder == "pyav" or (decoder == "auto" and not decord_available()):
        return decode_pyav(path, selection)
    if decoder == "decord":
        return decode_decord(path, selection)
    try:
        return decode_decord(path, selection)
    except DecodeFailed:
        return decode_pyav(path, selection)
