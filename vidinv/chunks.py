"""Frame ranges for chunked VAE and UNet calls."""

from __future__ import annotations


def frame_slices(num_frames: int, chunk: int | None) -> list[slice]:
    """Consecutive frame ranges of at most `chunk` frames (0/None = one range for the clip)."""
    step = num_frames if not chunk or chunk <= 0 else chunk
    return [slice(i, min(i + step, num_frames)) for i in range(0, num_frames, step)]
