"""The clip's shape as a run will see it (one frame decoded), and component configs read from a
diffusers folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

from vidinv.config import Config
from vidinv.errors import VidinvError


def clip_shape(config: Config) -> tuple[int, int, int]:
    """(frames, height, width) of the configured clip: one frame is decoded for the source size."""
    from vidinv.io import read_video
    from vidinv.io.resize import target_size

    v = config.video
    first = read_video(v.path, start=v.start, num_frames=1, stride=v.stride)
    size = None if v.height is None and v.width is None else (v.height, v.width)
    height, width = target_size(tuple(first.frames.shape[-2:]), size)
    return v.num_frames or _count_frames(Path(v.path), v.start, v.stride), height, width


def _count_frames(path: Path, start: int, stride: int) -> int:
    """Frames a whole-clip selection keeps (num_frames null): the container's count, after start/stride."""
    if path.is_dir():
        from vidinv.io.images import list_images

        total = len(list_images(path))
    else:
        import av

        with av.open(str(path)) as container:
            total = container.streams.video[0].frames
    return max(1, math.ceil((total - start) / stride))


def read_folder_config(folder: Path, name: str) -> dict:
    """A JSON config file of a diffusers folder (e.g. unet/config.json); a one-line error if unreadable."""
    try:
        return json.loads((Path(folder) / name).read_text())
    except (OSError, ValueError) as err:
        raise VidinvError(f"plan: cannot read the component configs of {folder}: {err}") from err
