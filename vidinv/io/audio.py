"""The source's audio, cut to the selected frames and muxed beside a written video (PyAV).

`clip_audio` decides whether a clip keeps its audio (`runtime.audio: copy | drop`; a stride other
than 1 or another output frame rate drops it with a one-line note) and names the segment,
`AudioSource`. `AudioTrack` decodes that segment packet by packet, trims it to the sample, and
encodes it into the output container as the video is written (`write_until`), so the audio never
sits in memory whole. The encoders run on one thread with bitexact flags: same input, same bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger("vidinv")

AUDIO_MODES = ("copy", "drop")
AUDIO_CODECS = {"mp4": "aac", "matroska": "flac"}  # the video's container -> its audio encoder


@dataclass(frozen=True)
class AudioSource:
    """The audio of `path` from `start_s` for `duration_s` seconds (times of the video stream)."""

    path: Path
    start_s: float
    duration_s: float


def _video_start_and_audio(path: Path) -> tuple[float, bool]:
    """(the video stream's start time in seconds, whether the file has an audio stream)."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        start = float(video.start_time * video.time_base) if video.start_time is not None else 0.0
        return start, bool(container.streams.audio)


def clip_audio(
    path: str | Path, *, start: int, frames: int, stride: int, fps: float, out_fps: float, mode: str = "copy"
) -> AudioSource | None:
    """The audio of `frames` frames read from frame `start` of `path` (a source at `fps`), or None:
    for mode "drop", a source without audio (or a folder of images), and, with a one-line note, a
    stride other than 1 or an output frame rate other than the source's (the audio would not match)."""
    path = Path(path)
    if mode == "drop" or not path.is_file():
        return None
    offset, has_audio = _video_start_and_audio(path)
    if not has_audio:
        return None
    reason = None
    if stride != 1:
        reason = f"video.stride={stride} skips frames"
    elif abs(out_fps - fps) > 1e-6:
        reason = f"the output's {out_fps:g} fps differ from the source's {fps:g}"
    if reason:
        log.warning(
            "note: %s has audio, but %s: the audio is dropped (runtime.audio=drop says so quietly)", path, reason
        )
        return None
    return AudioSource(path, offset + start / fps, frames / fps)


class AudioTrack:
    """An audio stream of an output container, fed from an `AudioSource` up to a given time."""

    def __init__(self, source: AudioSource, container):
        import av

        self.input = av.open(str(source.path))
        self.in_stream = self.input.streams.audio[0]
        self.rate = self.in_stream.codec_context.sample_rate
        self.layout = self.in_stream.codec_context.layout.name
        codec = AUDIO_CODECS[container.format.name.split(",")[0]]
        self.stream = container.add_stream(codec, rate=self.rate, layout=self.layout)
        self.stream.codec_context.thread_count = 1
        self.stream.options = {"flags": "+bitexact"}
        self.container, self.written = container, 0
        self.first = round(source.start_s * self.rate)  # the segment's samples: [first, end)
        self.end = self.first + round(source.duration_s * self.rate)
        self.pending = self._segment(av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate))

    def _decoded(self):
        """Decoded frames from the start; packets the decoder rejects are skipped (as ffmpeg does)."""
        import av

        for packet in self.input.demux(self.in_stream):
            try:
                yield from self.in_stream.decode(packet)
            except av.error.InvalidDataError:
                continue

    def _segment(self, resampler):
        """AudioFrames (fltp) holding exactly the segment's samples, in order."""
        import av

        position = 0  # the sample index of the next decoded sample
        for frame in self._decoded():
            if frame.pts is not None:
                position = round(frame.pts * frame.time_base * self.rate)
            parts = [part.to_ndarray() for part in resampler.resample(frame)]
            if not parts:
                continue
            samples = np.concatenate(parts, axis=1)
            lo, hi = max(0, self.first - position), min(samples.shape[1], self.end - position)
            position += samples.shape[1]
            if hi > lo:
                out = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples[:, lo:hi]), format="fltp", layout=self.layout
                )
                out.sample_rate, out.time_base = self.rate, Fraction(1, self.rate)
                yield out
            if position >= self.end:
                return

    def write_until(self, seconds: float) -> None:
        """Encode and mux the segment's audio up to `seconds` of the output."""
        while self.written < seconds * self.rate:
            frame = next(self.pending, None)
            if frame is None:
                return
            frame.pts = self.written
            self.written += frame.samples
            self.container.mux(self.stream.encode(frame))

    def finish(self, seconds: float) -> None:
        """The rest up to `seconds`, then the encoder flushed."""
        self.write_until(seconds)
        self.container.mux(self.stream.encode(None))

    def close(self) -> None:
        self.input.close()
