"""Frame decoders: decord (random access by index) and PyAV (sequential, stops after the last frame wanted).

Each returns `Decoded`: the selected pictures as uint8 (n, H, W, 3), the source fps and how many
frames the source has (for PyAV: how many it decoded, exact when nothing was selected).
Decoder exceptions are turned into `DecodeFailed`, never let out raw. `probe` opens a file with
PyAV (which logs nothing unless `--debug`) before decord ever sees it, so decord's C++ log lines
never show for a file that is not a video; `quiet_libraries` silences ffmpeg's own log lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidinv.errors import VidinvError, first_line
from vidinv.io.selection import FrameSelection

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")  # still pictures: a folder of them, never a video

DECODERS = ("auto", "decord", "pyav")
DEFAULT_FPS = 25.0  # when a container states no frame rate
STILL_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe")  # PyAV's demuxers
_quiet = True  # ffmpeg's log lines off (the command line turns them on with --debug)


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


def quiet_libraries(quiet: bool = True) -> None:
    """Silence (quiet=True, the default) or show ffmpeg's log lines, in PyAV and in decord."""
    import av.logging

    global _quiet
    _quiet = quiet
    av.logging.set_level(None if quiet else av.logging.WARNING)


def check_video_file(path: Path) -> None:
    """A one-line VidinvError for what cannot be a video file: an image, an empty or special file."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise VidinvError(f"{path}: is an image; give a video file or a folder of frames")
    if not path.is_file():
        raise VidinvError(f"{path}: is not a video file or a folder of frames")
    if path.stat().st_size == 0:
        raise VidinvError(f"{path}: is empty (0 bytes)")


@dataclass
class Probe:
    """What the container says of its first video stream."""

    fps: float
    height: int
    width: int


def probe(path: Path) -> Probe:
    """Open a video file with PyAV; `DecodeFailed` unless it is a container with a video stream
    (a still image is refused: a folder of frames is the way to give images)."""
    import av

    try:
        with av.open(str(path)) as container:
            if container.format.name in STILL_IMAGE_FORMATS:
                raise DecodeFailed("it is an image; give a folder of frames instead")
            if not container.streams.video:
                raise DecodeFailed("no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            height, width = stream.codec_context.height, stream.codec_context.width
    except DecodeFailed:
        raise
    except Exception as err:
        raise DecodeFailed(_first_line(err)) from err
    if not height or not width:
        raise DecodeFailed("no frame size")
    return Probe(float(rate) if rate else DEFAULT_FPS, height, width)


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except (ImportError, OSError):  # not installed, or its bundled libraries fail to load
        return False
    return True


def decode_decord(path: Path, selection: FrameSelection) -> Decoded:
    try:
        import decord

        decord.logging.set_level(decord.logging.QUIET if _quiet else decord.logging.WARNING)
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
    """Decode with `decoder`; "auto" tries decord when importable, then PyAV. The file is probed
    (`probe`) first."""
    probe(path)
    if decoder == "pyav" or (decoder == "auto" and not decord_available()):
        return decode_pyav(path, selection)
    if decoder == "decord":
        return decode_decord(path, selection)
    try:
        return decode_decord(path, selection)
    except DecodeFailed:
        return decode_pyav(path, selection)
