"""Memory from shapes alone, and the machine's: a module call runs on fake tensors (no data, no
compute) under a dispatch mode that counts the bytes of the tensors alive at each moment; fake
modules' parameter bytes; the device's, host's and disk's free capacity."""

from __future__ import annotations

import contextlib
import os
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages created inside the mode that are still alive; `peak` is the largest sum."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen = WeakIdKeyDictionary()

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage not in self._seen:
                    self._seen[storage] = True
                    self.live += storage.nbytes()
                    weakref.finalize(storage, self._free, storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


def fake_mode() -> FakeTensorMode:
    """A mode in which modules are built and run without allocating their tensors."""
    return FakeTensorMode(allow_non_fake_inputs=True)


@torch.no_grad()
def peak_bytes(call: Callable[[], object]) -> int:
    """Peak bytes of the tensors `call` creates (run inside a `fake_mode()`; inputs not counted)."""
    with LiveBytes() as tracker:
        call()
    return tracker.peak


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
