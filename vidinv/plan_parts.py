"""Pieces every planner uses (`vidinv.plan` for UNets, `vidinv.plan_flow` for flow transformers): the
`Plan` record, the clip's shape, component configs read from a folder, parameter bytes of fake
modules, and the memory of the machine."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidinv.config import Config
from vidinv.errors import VidinvError
from vidinv.plan_calls import MB


# ---------------------------------------------------------------- shapes of the clip and the model
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


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Modules built inside get parameters of `dtype`."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


# ---------------------------------------------------------------- the plan
@dataclass
class Plan:
    """What a run will cost (bytes unless named otherwise)."""

    command: str
    frames: int
    height: int
    width: int
    device: str
    frame_calls: dict[str, int]
    weights: dict[str, int]
    unet_activations: int
    vae_activations: int
    store_bytes: int | None
    device_peak: int
    host_peak: int
    host_parts: dict[str, int] = field(default_factory=dict)
    latent_frames: int | None = None  # a causal video VAE's (Wan): frame-calls count latent frames
    record_bytes: int = 0  # the inversion record's tensors
    record_on_disk: bool = False  # runtime.record: read and written step by step in its file

    def summary(self) -> str:
        mb = lambda n: f"{n / MB:,.0f} MB"  # noqa: E731
        calls = ", ".join(f"{k} {v:,}" for k, v in self.frame_calls.items())
        frames, unit = f"{self.frames} frames", ""
        if self.latent_frames is not None:
            frames, unit = f"{frames} ({self.latent_frames} latent frames)", " of latent frames"
        lines = [
            f"vidinv {self.command}: {frames} at {self.height}x{self.width} on {self.device}",
            f"  UNet frame-calls{unit}: {sum(self.frame_calls.values()):,} ({calls})",
            f"  weights: {mb(sum(self.weights.values()))} ("
            + ", ".join(f"{k} {mb(v)}" for k, v in self.weights.items())
            + ")",
            f"  activation peaks: one UNet call {mb(self.unet_activations)}, one VAE chunk {mb(self.vae_activations)}",
            f"  peak device memory: {mb(self.device_peak)}",
            f"  peak host memory: {mb(self.host_peak)} ("
            + ", ".join(f"{k} {mb(v)}" for k, v in self.host_parts.items())
            + ")",
        ]
        if self.record_bytes:
            where = "on disk, read step by step" if self.record_on_disk else "in host memory"
            lines.append(f"  inversion record: {mb(self.record_bytes)} {where} (runtime.record)")
        if self.store_bytes is not None:
            lines.append(f"  FateZero store: {mb(self.store_bytes)}")
        return "\n".join(lines)


def device_capacity(device: torch.device) -> int | None:
    """The memory of a CUDA device this run can have: what the driver reports free (other processes'
    use taken out, not the card's total) plus what this process's allocator holds in its cache (a
    batch's earlier items). None for the CPU, whose limit is the host's memory, and for a device
    this machine lacks (the run's loading refuses it)."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return None


def disk_free(path: str | Path) -> int:
    """Free bytes on the disk that holds `path` (its nearest existing folder)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def host_capacity() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
