"""Peak memory of a module call from shapes alone: the call runs on fake tensors (no data, no
compute) under a dispatch mode that counts the bytes of the tensors alive at each moment."""

from __future__ import annotations

import weakref
from collections.abc import Callable

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
