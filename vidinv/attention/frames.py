"""Which frames each frame attends to, and how a clip is cut into UNet passes.

Everything here is pure Python over frame indices (no tensors), so the patterns are easy to
test on their own. The processors and the runner only consume what these functions return.

Modes (`model.frame_attention`):
- ``none``: every frame attends to itself (plain per-frame Stable Diffusion).
- ``sparse_causal``: frame i attends to the first frame and the previous one, {0, i-1}
  (Tune-A-Video, FateZero). Frames 0 and 1 therefore attend to {0} only (a key set with a
  repeated frame gives the same attention, so duplicates are dropped).
- ``keyframe``: every frame, anchors included, attends to the anchor frames: the first, the
  middle (index F // 2) or every k-th frame (0, k, 2k, ...) (Text2Video-Zero, Pix2Video,
  TokenFlow's extended attention over keyframes).
- ``full``: frames are cut into consecutive groups of G; every frame attends to all frames of
  its group (extended attention).
Key sets are returned sorted, without duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vidinv.chunks import frame_slices
from vidinv.errors import VidinvError

MODES = ("none", "sparse_causal", "keyframe", "full")
KEYFRAMES = ("first", "middle", "stride")


@dataclass(frozen=True)
class FramePattern:
    """A cross-frame attention mode with its parameters (see the module docstring)."""

    mode: str = "sparse_causal"
    keyframes: str = "first"
    keyframe_stride: int = 8
    group: int = 16

    def __post_init__(self):
        if self.mode not in MODES:
            raise VidinvError(f"frame attention mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.keyframes not in KEYFRAMES:
            raise VidinvError(f"keyframes {self.keyframes!r} is not one of {', '.join(KEYFRAMES)}")
        if self.keyframe_stride < 1 or self.group < 1:
            raise VidinvError("keyframe_stride and group must be integers >= 1")

    def anchors(self, num_frames: int) -> tuple[int, ...]:
        """The anchor frames of `keyframe` mode for a clip of `num_frames` frames."""
        if self.keyframes == "first":
            return (0,)
        if self.keyframes == "middle":
            return (num_frames // 2,)
        return tuple(range(0, num_frames, self.keyframe_stride))

    def attended(self, i: int, num_frames: int) -> tuple[int, ...]:
        """Global indices of the frames whose keys/values frame i attends to."""
        if not 0 <= i < num_frames:
            raise IndexError(f"frame {i} is outside a clip of {num_frames} frames")
        if self.mode == "none":
            return (i,)
        if self.mode == "sparse_causal":
            return tuple(sorted({0, max(i - 1, 0)}))
        if self.mode == "keyframe":
            return self.anchors(num_frames)
        start = (i // self.group) * self.group
        return tuple(range(start, min(start + self.group, num_frames)))

    def chunk_frames(self, num_frames: int, chunk: int | None) -> list[tuple[int, ...]]:
        """The frames of each UNet pass, in the order they must run.

        - none / sparse_causal: consecutive chunks in order (sparse-causal carries the previous
          chunk's last frame and the first frame to later chunks through the K/V cache);
        - keyframe: the first pass holds all anchors (topped up with the first other frames to
          `chunk`), later passes the remaining frames; so a pass may exceed `chunk` when there
          are more anchors than `chunk`;
        - full: chunks are a multiple of the group G (rounded down, at least G) so no group is
          split; peak memory is bounded by max(chunk, G) frames.
        """
        if num_frames < 1:
            raise VidinvError("a clip needs at least one frame")
        if not chunk or chunk <= 0 or chunk >= num_frames:
            return [tuple(range(num_frames))]
        if self.mode == "full":
            chunk = max(self.group, (chunk // self.group) * self.group)
        if self.mode == "keyframe":
            anchors = self.anchors(num_frames)
            rest = [i for i in range(num_frames) if i not in anchors]
            first = max(0, chunk - len(anchors))
            passes = [tuple(sorted(anchors + tuple(rest[:first])))]
            rest = rest[first:]
            return passes + [tuple(rest[s]) for s in frame_slices(len(rest), chunk)] if rest else passes
        return [tuple(range(s.start, s.stop)) for s in frame_slices(num_frames, chunk)]

    def plan(self, num_frames: int, chunk: int | None = None) -> list[FramePass]:
        """The passes of one UNet step over the clip, with what each caches and reuses."""
        groups = self.chunk_frames(num_frames, chunk)
        needed = [{j for i in frames for j in self.attended(i, num_frames)} - set(frames) for frames in groups]
        passes, available = [], set()
        for p, frames in enumerate(groups):
            missing = needed[p] - available
            if missing:  # a pattern/plan bug, never a user error
                raise AssertionError(f"pass {p} needs frames {sorted(missing)} that no earlier pass cached")
            later = set().union(*needed[p + 1 :]) if p + 1 < len(groups) else set()
            record = tuple(sorted(set(frames) & later))
            available |= set(record)
            drop = tuple(sorted(j for j in available if j not in later))
            available -= set(drop)
            passes.append(FramePass(frames, self._buckets(frames, num_frames), record, tuple(sorted(needed[p])), drop))
        return passes

    def _buckets(self, frames: tuple[int, ...], num_frames: int) -> list[Bucket]:
        """Query frames grouped by shared key set, then key sets batched by shape."""
        by_keys: dict[tuple[int, ...], list[int]] = {}
        for i in frames:
            by_keys.setdefault(self.attended(i, num_frames), []).append(i)
        by_shape: dict[tuple[int, int], Bucket] = {}
        for keys, queries in by_keys.items():
            bucket = by_shape.setdefault((len(queries), len(keys)), Bucket())
            bucket.queries.append(tuple(queries))
            bucket.keys.append(keys)
        return list(by_shape.values())


@dataclass
class Bucket:
    """Key sets of equal size, each shared by an equal number of query frames: one attention call.

    queries[s] are the global indices of the query frames of set s, keys[s] the frames they attend to.
    """

    queries: list[tuple[int, ...]] = field(default_factory=list)
    keys: list[tuple[int, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class FramePass:
    """One UNet call over `frames` (global indices).

    buckets: the attention calls of every cross-frame layer; record: frames of this pass whose
    keys/values later passes use (cached per layer); cached: frames from earlier passes that this
    pass attends to; drop: cached frames no later pass needs (freed after this pass).
    """

    frames: tuple[int, ...]
    buckets: list[Bucket]
    record: tuple[int, ...] = ()
    cached: tuple[int, ...] = ()
    drop: tuple[int, ...] = ()


def attended_frames(i: int, num_frames: int, mode: str = "sparse_causal", **params) -> tuple[int, ...]:
    """Frames that frame i of a `num_frames` clip attends to under `mode` (params as FramePattern)."""
    return FramePattern(mode, **params).attended(i, num_frames)
