"""`write_video`: frames -> .mp4 (H.264), .mkv (FFV1, lossless), .gif, or a folder of PNGs, written atomically.

mp4: libx264, yuv420p, crf 18, preset medium with a 10-frame rate-control lookahead (x264's
default 40 frames in flight cost ~0.4 MB each at 256x256; 10 cost -0.23 dB PSNR on bikes.mp4,
docs/benchmarks.md), through PyAV. yuv420p needs even sizes, so an odd height or width is
padded by one row/column repeating the edge pixels. mkv: FFV1 of the RGB pictures (bgr0),
lossless. gif: PyAV's gif encoder with a per-frame 256-colour palette (median cut, no
dithering). png: `frame_00000.png`, ... in a folder. The file (or folder) appears under its final
name only once complete (`vidinv.outputs.atomic_path`).

Same pictures -> the same bytes, whatever the process did before: every encoder runs on one
thread (x264's output depends on its thread count, which it would otherwise take from the CPUs it
sees), x264 runs without its AVX-512 kernels (one of them reads memory it never wrote:
`vidinv.io.x264`), and the containers are written bitexact (no library version tag, no random
Matroska segment id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vidinv.errors import VidinvError
from vidinv.io.audio import AudioSource, AudioTrack
from vidinv.io.video import frames_to_uint8
from vidinv.io.x264 import x264_params
from vidinv.outputs import atomic_path

FORMATS = ("mp4", "mkv", "gif", "png")
AUDIO_FORMATS = ("mp4", "mkv")  # the formats that carry the source's audio
log = logging.getLogger("vidinv")
CODECS = {"h264": "mp4", "ffv1": "mkv", "png": "png"}  # runtime.codec -> the format it is written in
MP4_OPTIONS = {"crf": "18", "preset": "medium", "rc-lookahead": "10"}
PNG_NAME = "frame_{:05d}.png"
ENCODER_THREADS = 1  # fixed, so that the bytes do not depend on the machine's CPU count
BITEXACT_CONTAINER = {"fflags": "+bitexact"}
BITEXACT_CODEC = {"flags": "+bitexact"}

Frames = torch.Tensor | np.ndarray


def video_format(path: Path, format: str | None = None) -> str:
    """The format `write_video` uses: `format`, else by extension (none = a PNG folder)."""
    fmt = format or {"": "png", ".mp4": "mp4", ".mkv": "mkv", ".gif": "gif"}.get(path.suffix.lower())
    if fmt not in FORMATS:
        raise VidinvError(
            f"{path}: cannot tell the video format (use .mp4, .mkv, .gif, no suffix for PNGs, or format=)"
        )
    return fmt


def video_filename(stem: str, codec: str = "h264") -> str:
    """The file name of a clip written with `codec` (runtime.codec): edited.mp4, edited.mkv, edited (PNG folder)."""
    fmt = CODECS[codec]
    return stem if fmt == "png" else f"{stem}.{fmt}"


def write_video(
    path: str | Path,
    frames: Frames | Iterable[Frames],
    fps: float,
    *,
    format: str | None = None,
    audio: AudioSource | None = None,
) -> Path:
    """Write frames (f, 3, H, W) floats in [-1, 1] or uint8 (f, H, W, 3) at `fps`.

    `frames` may also be an iterable of such chunks, written as they come (long clips need not
    be in memory at once). format: "mp4" | "mkv" | "gif" | "png"; None = by the path's extension.
    audio: a segment of a source's audio muxed beside the frames (mp4: AAC, mkv: FLAC).
    """
    chunks = [frames] if isinstance(frames, (torch.Tensor, np.ndarray)) else frames
    with VideoWriter(path, fps, format=format, audio=audio) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return Path(path)


class VideoWriter:
    """A video written chunk by chunk as it comes: `with VideoWriter(path, fps) as w: w.write(chunk)`.

    Chunks are float frames (f, 3, H, W) in [-1, 1] or uint8 (f, H, W, 3). The file (or PNG
    folder) appears under its final name only when the block ends cleanly; on any error (Ctrl-C
    included) nothing is left. `audio` (mp4 and mkv only; elsewhere dropped with a note) is
    written as the frames come, up to the time of the last frame.
    """

    def __init__(self, path: str | Path, fps: float, *, format: str | None = None, audio: AudioSource | None = None):
        self.path = Path(path)
        self.format = video_format(self.path, format)
        if not fps or fps <= 0:
            raise VidinvError(f"{self.path}: fps must be > 0, got {fps}")
        if audio is not None and self.format not in AUDIO_FORMATS:
            log.warning("note: %s: a %s output carries no audio; the audio is dropped", self.path, self.format)
            audio = None
        self.fps, self.count, self.audio = fps, 0, audio
        self._atomic = self._session = None
        self._finished = False

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path)
        self._session = WRITERS[self.format].open(self._atomic.__enter__(), self.fps, self.audio)
        return self

    def write(self, frames: Frames) -> None:
        if self._finished:
            raise VidinvError(f"{self.path}: written after finish()")
        for picture in frames_to_uint8(frames):
            self._session.add(picture)
            self.count += 1
        self._session.write_audio_until(self.count / self.fps)

    def finish(self) -> None:
        """Flush and close the encoder now, its memory given back (x264 keeps a pool of its
        lookahead frames until its codec context is freed, in blocks below the mmap threshold);
        the file still appears under its final name only when the block ends cleanly."""
        if not self._finished:
            from vidinv.hostmemory import trim_heap

            self._finished = True
            session, self._session = self._session, None
            session.close()
            del session
            trim_heap()

    def __exit__(self, kind, error, trace):
        try:
            self.finish()
            if kind is None and self.count == 0:
                raise VidinvError(f"{self.path}: no frames to write")
        except BaseException as err:
            if kind is None:
                self._atomic.__exit__(type(err), err, err.__traceback__)
                raise
        return self._atomic.__exit__(kind, error, trace)


def _even(picture: np.ndarray) -> np.ndarray:
    height, width = picture.shape[:2]
    return np.pad(picture, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def _rgb_frame(picture: np.ndarray):
    import av

    return av.VideoFrame.from_ndarray(picture, format="rgb24")


def _h264_frame(picture: np.ndarray):
    return _rgb_frame(_even(picture))


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
    pinned: Callable[[], dict] = dict  # options fixed per machine (x264's instruction sets)

    def open(self, tmp: Path, fps: float, audio: AudioSource | None = None) -> EncodingSession:
        return EncodingSession(self, tmp, fps, audio)


class EncodingSession:
    """One PyAV container being written; the video stream is sized by the first picture, and an
    audio track (`vidinv.io.audio.AudioTrack`) added beside it when there is audio."""

    def __init__(self, encoding: Encoding, tmp: Path, fps: float, audio: AudioSource | None = None):
        import av

        self.encoding, self.fps, self.audio_source = encoding, fps, audio
        self.container = av.open(str(tmp), "w", format=encoding.container, options=BITEXACT_CONTAINER)
        self.stream = self.audio = None
        self.count = 0

    def add(self, picture: np.ndarray) -> None:
        frame = self.encoding.to_frame(picture)
        if self.stream is None:
            stream = self.container.add_stream(self.encoding.codec, rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, self.encoding.pix_fmt
            stream.codec_context.thread_count = ENCODER_THREADS
            stream.options = {**self.encoding.options, **BITEXACT_CODEC, **self.encoding.pinned()}
            self.stream = stream
            if self.audio_source is not None:
                self.audio = AudioTrack(self.audio_source, self.container)
        self.container.mux(self.stream.encode(frame))
        self.count += 1

    def write_audio_until(self, seconds: float) -> None:
        if self.audio is not None:
            self.audio.write_until(seconds)

    def close(self) -> None:
        try:
            if self.stream is not None:
                self.container.mux(self.stream.encode(None))
            if self.audio is not None:
                self.audio.finish(self.count / self.fps)
        finally:
            if self.audio is not None:
                self.audio.close()
            self.container.close()


class PngFolder:
    """Pictures as frame_00000.png, ... in a folder."""

    def open(self, tmp: Path, fps: float, audio: None = None) -> PngFolder:
        session = PngFolder()
        session.folder, session.count = tmp, 0
        tmp.mkdir(parents=True)
        return session

    def add(self, picture: np.ndarray) -> None:
        Image.fromarray(picture).save(self.folder / PNG_NAME.format(self.count))
        self.count += 1

    def write_audio_until(self, seconds: float) -> None:
        pass  # a folder of pictures has no audio track

    def close(self) -> None:
        pass


WRITERS = {
    "mp4": Encoding("mp4", "libx264", "yuv420p", MP4_OPTIONS, _h264_frame, x264_params),
    "mkv": Encoding("matroska", "ffv1", "bgr0", {}, _rgb_frame),
    "gif": Encoding("gif", "gif", "pal8", {}, _palette_frame),
    "png": PngFolder(),
}
