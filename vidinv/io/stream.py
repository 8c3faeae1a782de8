"""`ClipStream`: a clip read chunk by chunk, never all in memory.

Frames are decoded (PyAV, sequentially; an image folder file by file), selected (start, stride,
count), resized and converted to float32 (k, 3, H, W) in [-1, 1] one chunk of `chunk` frames
at a time. `chunks()` may be iterated more than once (each pass decodes again), so a pipeline
reads the source once to encode it and once more to write it beside the edit: only
latent-sized state spans the whole clip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidinv.errors import VidinvError
from vidinv.io.decoders import DecodeFailed, _first_line, _pyav_pictures, check_video_file, probe
from vidinv.io.images import _load, list_images
from vidinv.io.resize import center_crop, check_size, resize_frames, target_size
from vidinv.io.selection import FrameSelection
from vidinv.io.video import frames_from_uint8


@dataclass
class ClipStream:
    path: Path
    selection: FrameSelection
    size: tuple[int | None, int | None] | None = None
    resize: str = "center_crop"
    chunk: int = 8
    folder_fps: float = 8.0

    def __post_init__(self):
        self.path = Path(self.path)
        self.selection.check(self.path)
        check_size(self.size, self.path)
        if not self.path.exists():
            raise VidinvError(f"{self.path}: no such file or folder")
        self.chunk = max(1, int(self.chunk or 1))
        self.fps, self.source_size = self._probe()
        self.height, self.width = target_size(self.source_size, self.size, self.path)
        self.fps = self.fps / self.selection.stride
        self.num_frames: int | None = None  # known after the first full pass

    def _probe(self) -> tuple[float, tuple[int, int]]:
        """(source fps, source (height, width)) from the container or the first image."""
        if self.path.is_dir():
            files = list_images(self.path)
            return self.folder_fps, tuple(_load(files[0]).shape[:2])
        check_video_file(self.path)
        try:
            found = probe(self.path)
        except DecodeFailed as err:
            raise VidinvError(f"{self.path}: cannot be decoded as a video ({err})") from None
        return found.fps, (found.height, found.width)

    def _pictures(self) -> Iterator[np.ndarray]:
        """The selected uint8 pictures (H, W, 3), in order."""
        if self.path.is_dir():
            files = list_images(self.path)
            for i in self.selection.indices(len(files)):
                picture = _load(files[i])
                if picture.shape[:2] != self.source_size:
                    raise VidinvError(f"{self.path}: images differ in size ({files[i].name})")
                yield picture
            return
        import av

        last = self.selection.last
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for index, frame in enumerate(_pyav_pictures(container, stream)):
                    if self.selection.wants(index):
                        yield frame.to_ndarray(format="rgb24")
                    if last is not None and index >= last:
                        break
        except (VidinvError, GeneratorExit):
            raise
        except Exception as err:
            raise VidinvError(f"{self.path}: cannot be decoded as a video ({_first_line(err)})") from None

    def _fit(self, frames: torch.Tensor) -> torch.Tensor:
        if self.size is None or self.size == (None, None):  # only crop to multiples of 8
            return center_crop(frames, (self.height, self.width))
        return resize_frames(frames, (self.height, self.width), mode=self.resize)

    def chunks(self) -> Iterator[torch.Tensor]:
        """Float frames (k, 3, H, W) in [-1, 1], `chunk` at a time; a VidinvError if none are selected."""
        batch, count = [], 0
        for picture in self._pictures():
            batch.append(picture)
            if len(batch) == self.chunk:
                count += len(batch)
                yield self._fit(frames_from_uint8(np.stack(batch)))
                batch = []
        if batch:
            count += len(batch)
            yield self._fit(frames_from_uint8(np.stack(batch)))
        if count == 0:
            raise VidinvError(f"{self.path}: no frames from start {self.selection.start} (no decodable frames there)")
        if self.num_frames is None:  # the first full pass
            self.selection.note_if_short(self.path, count)
        self.num_frames = count


def clip_stream(video_config, chunk: int) -> ClipStream:
    """The configured clip (`config.video`) as a stream of `chunk`-frame chunks."""
    v = video_config
    size = None if v.height is None and v.width is None else (v.height, v.width)
    selection = FrameSelection(start=v.start, num_frames=v.num_frames, stride=v.stride)
    return ClipStream(v.path, selection, size=size, resize=v.resize, chunk=chunk)


__all__ = ["ClipStream", "clip_stream"]
