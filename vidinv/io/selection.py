"""Which source frames a read keeps: start, start + stride, ... (at most num_frames of them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vidinv.errors import VidinvError

log = logging.getLogger("vidinv")


@dataclass(frozen=True)
class FrameSelection:
    start: int = 0
    num_frames: int | None = None  # None = to the end
    stride: int = 1

    def check(self, path) -> None:
        if self.stride < 1:
            raise VidinvError(f"{path}: stride must be >= 1, got {self.stride}")
        if self.start < 0:
            raise VidinvError(f"{path}: start must be >= 0, got {self.start}")
        if self.num_frames is not None and self.num_frames < 1:
            raise VidinvError(f"{path}: num_frames must be >= 1 or None, got {self.num_frames}")

    @property
    def last(self) -> int | None:
        """Index of the last frame wanted (None = to the end of the source)."""
        return None if self.num_frames is None else self.start + self.stride * (self.num_frames - 1)

    def indices(self, total: int) -> list[int]:
        """The selected indices in a source of `total` frames."""
        stop = total if self.last is None else min(total, self.last + 1)
        return list(range(self.start, stop, self.stride))

    def wants(self, index: int) -> bool:
        in_range = index >= self.start and (self.last is None or index <= self.last)
        return in_range and (index - self.start) % self.stride == 0

    def note_if_short(self, path, count: int) -> None:
        """A one-line note when the source gave fewer than `num_frames` frames (`count` are used)."""
        if self.num_frames is not None and count < self.num_frames:
            log.warning(
                "note: %s: num_frames=%d from frame %d with stride %d asks for more frames than the clip has; using %d",
                path,
                self.num_frames,
                self.start,
                self.stride,
                count,
            )
