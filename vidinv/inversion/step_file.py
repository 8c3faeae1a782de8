"""A record's tensors on disk, read and written one step at a time.

An inversion record holds (N+1, f, c, h, w) latents (and (N, f, c, h, w) noise maps): 3.3 MB per
frame at 512x512 and 50 steps, 30 GB for a 5-minute clip. Every user of it reads one step (all
frames, or a chunk of them) at a time, and the inversion produces one step at a time, so the
whole of it never needs to be in memory: `StepFile` keeps it in the record's safetensors file and
moves steps with `os.pread` / `os.pwrite` (no memory map, whose touched pages would stay resident).

The file is the one `safetensors.torch.save_file` writes for the same tensors, byte for byte
(8-byte header length, the JSON header, padded with spaces to 8 bytes, the row-major data), so a
record written step by step loads with safetensors like any other. `create` lays out the header
and the file's full size first (the data region is sparse until written).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from vidinv.errors import VidinvError

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
TORCH_DTYPES = {name: dtype for dtype, name in DTYPES.items()}


@dataclass(frozen=True)
class Layout:
    """Where one tensor's data lies in the file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute offset of its first byte

    @property
    def step_bytes(self) -> int:
        return _numel(self.shape[1:]) * self.dtype.itemsize


def create(
    path: str | Path, specs: dict[str, tuple[torch.dtype, tuple[int, ...]]], metadata=None
) -> dict[str, StepFile]:
    """Lay out a safetensors file for tensors {name: (dtype, shape)} (data not yet written) and open
    each tensor of it for writing."""
    entries, offset = {}, 0
    for name in sorted(specs, key=lambda n: (-specs[n][0].itemsize, n)):  # safetensors' order
        dtype, shape = specs[name]
        size = _numel(shape) * dtype.itemsize
        entries[name] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header = {"__metadata__": dict(metadata)} if metadata else {}
    text = json.dumps({**header, **entries}, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    try:
        with open(path, "wb") as handle:
            handle.write(struct.pack("<Q", len(text)) + text)
            handle.truncate(8 + len(text) + offset)
    except OSError as err:
        raise VidinvError(f"{path}: cannot write the record here ({err.strerror})") from None
    return open_tensors(path, writable=True)


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata=None) -> None:
    """`safetensors.torch.save_file`'s file, written a step at a time (save_file first copies every
    tensor into bytes: twice the record at its peak)."""
    files = create(path, {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}, metadata)
    for name, tensor in tensors.items():
        for i in range(len(tensor)):
            files[name][i] = tensor[i]


def open_tensors(path: str | Path, *, writable: bool = False) -> dict[str, StepFile]:
    """Every tensor of a safetensors file, as a `StepFile` (read-only unless `writable`)."""
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        (length,) = struct.unpack("<Q", os.pread(fd, 8, 0))
        header = json.loads(os.pread(fd, length, 8))
    except (struct.error, ValueError) as error:
        os.close(fd)
        raise ValueError(f"{path}: not a safetensors file ({error})") from None
    header.pop("__metadata__", None)
    handle = _Handle(fd, Path(path))
    return {
        name: StepFile(handle, Layout(TORCH_DTYPES[e["dtype"]], tuple(e["shape"]), 8 + length + e["data_offsets"][0]))
        for name, e in header.items()
    }


class _Handle:
    """One open file descriptor shared by the tensors of a file; closed when the last is collected."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    def __copy__(self):
        return self  # copies of a record share its open file (each closing it would close it twice)

    def __deepcopy__(self, memo):
        return self

    def __del__(self):
        os.close(self.fd)


class StepFile:
    """An (S, ...) tensor in a file, indexed by its first axis: `x[i]` and `x[i, a:b]` read one step
    (or a run of its frames), `x[i] = t` writes one, `x[i:]` is a view of the steps from i on."""

    def __init__(self, handle: _Handle, layout: Layout, first: int = 0, steps: int | None = None):
        self._handle, self.layout, self._first = handle, layout, first
        self._steps = layout.shape[0] - first if steps is None else steps

    @property
    def path(self) -> Path:
        return self._handle.path

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self._steps, *self.layout.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return self.layout.dtype

    def __len__(self) -> int:
        return self._steps

    def position_in(self, other: StepFile) -> int | None:
        """The step of `other` this view starts at, when it is a view of the same tensor of the same
        open file; else None."""
        if self._handle is not other._handle or self.layout != other.layout:
            return None
        return self._first - other._first

    def is_view_of(self, other: StepFile, start: int) -> bool:
        """Whether this is steps [start, ...) of `other`."""
        return self.position_in(other) == start

    def _offset(self, i: int) -> int:
        if not -self._steps <= i < self._steps:
            raise IndexError(f"step {i} of {self._steps}")
        return self.layout.start + (self._first + i % self._steps) * self.layout.step_bytes

    def _frames(self, i: int, frames: slice) -> tuple[int, int, tuple[int, ...]]:
        """(offset, bytes, shape) of frames `frames` of step i."""
        rest = self.layout.shape[2:]
        a, b, stride = frames.indices(self.layout.shape[1])
        if stride != 1:
            raise IndexError("frames must be a contiguous run")
        per_frame = _numel(rest) * self.dtype.itemsize
        return self._offset(i) + a * per_frame, max(b - a, 0) * per_frame, (max(b - a, 0), *rest)

    def __getitem__(self, key) -> torch.Tensor | StepFile:
        if isinstance(key, slice):
            start, stop, stride = key.indices(self._steps)
            if stride != 1:
                raise IndexError("steps must be a contiguous run")
            return StepFile(self._handle, self.layout, self._first + start, max(stop - start, 0))
        if isinstance(key, tuple):
            i, frames = key
            offset, size, shape = self._frames(int(i), frames)
        else:
            offset, size, shape = self._offset(int(key)), self.layout.step_bytes, self.layout.shape[1:]
        return self._read(offset, size, shape)

    def __setitem__(self, i: int, value: torch.Tensor) -> None:
        data = value.detach().to(device="cpu", dtype=self.dtype).contiguous()
        if tuple(data.shape) != self.layout.shape[1:]:
            raise ValueError(f"step of shape {tuple(data.shape)}, expected {self.layout.shape[1:]}")
        raw = data.view(torch.uint8).numpy() if data.numel() else b""
        try:
            written = os.pwrite(self._handle.fd, memoryview(raw), self._offset(i))
        except OSError as err:  # a full disk, most likely
            raise VidinvError(f"{self.path}: cannot write step {i} of the record ({err.strerror})") from None
        if written != self.layout.step_bytes:
            raise VidinvError(
                f"{self.path}: short write ({written} of {self.layout.step_bytes} bytes; is the disk full?)"
            )

    def _read(self, offset: int, size: int, shape) -> torch.Tensor:
        buffer = bytearray(size)
        view, done = memoryview(buffer), 0
        while done < size:
            got = os.preadv(self._handle.fd, [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"{self.path}: the file ends before its header says")
            done += got
        if not size:
            return torch.empty(shape, dtype=self.dtype)
        return torch.frombuffer(buffer, dtype=self.dtype).reshape(shape)

    def tensor(self) -> torch.Tensor:
        """All of it, in memory (tests, small records)."""
        return self._read(
            self._offset(0) if self._steps else 0, self._steps * self.layout.step_bytes, tuple(self.shape)
        )

    def moved_to(self, path: str | Path) -> None:
        """The file was renamed (the open descriptor follows it; this keeps its name right)."""
        self._handle.path = Path(path)

    def flush(self) -> None:
        """Make what was written durable (before a checkpoint says it is there)."""
        os.fsync(self._handle.fd)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
