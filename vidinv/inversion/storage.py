"""Where an inversion's trajectory goes as it is computed: tensors in memory, or the record's file.

The inversion loops write step i of a trajectory with `storage[i] = z` and hand out the steps done
so far (a checkpoint's state) as a slice of it: a view, never written again (the later steps lie
outside it), so a checkpoint copies nothing beyond what it writes. The same code serves a torch
tensor and a `vidinv.inversion.step_file.StepFile` (the record on disk, `runtime.record: disk`).
"""

from __future__ import annotations

import torch

from vidinv.inversion.step_file import StepFile


def trajectory_storage(out: dict | None, steps: dict[str, int], like: torch.Tensor) -> list:
    """For each name of `steps` ({name: number of steps}, in order): out[name] when `out` is given
    (it must have that many steps of `like`'s shape), else an empty tensor (steps, *like.shape)."""
    storages = []
    for name, count in steps.items():
        if out is None:
            storages.append(torch.empty((count, *like.shape), dtype=like.dtype, device=like.device))
            continue
        storage = out[name]
        if tuple(storage.shape) != (count, *like.shape):
            raise ValueError(f"{name}: storage of shape {tuple(storage.shape)}, expected {(count, *like.shape)}")
        storages.append(storage)
    return storages


def place(storage, done, start: int) -> None:
    """Put a resumed run's steps `done` at steps [start, start + len(done)) of `storage`; nothing to
    do when `done` is that part of the same file (the record on disk is its own checkpoint)."""
    if isinstance(done, StepFile) and isinstance(storage, StepFile) and done.is_view_of(storage, start):
        return
    for offset in range(len(done)):
        storage[start + offset] = done[offset]


def read(storage, i: int, like: torch.Tensor) -> torch.Tensor:
    """Step i of `storage` on `like`'s device, in its dtype."""
    return storage[i].to(device=like.device, dtype=like.dtype)
