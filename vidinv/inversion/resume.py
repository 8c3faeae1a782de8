"""Resumable inversions: the state of a running inversion, saved every `runtime.checkpoint_seconds`
beside the record folder (`<record>.resume.safetensors`), picked up by the next run with the same
fingerprint and removed once the record is complete.

The checkpoint never looks like a record: it has its own name, is written atomically, and
carries the fingerprint of the config and input it belongs to.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vidinv.outputs import atomic_path

log = logging.getLogger("vidinv")
SUFFIX = ".resume.safetensors"


class Checkpoint:
    """Save/load the partial state of one inversion (a dict of tensors) for one fingerprint."""

    def __init__(self, record_dir: str | Path, fingerprint: str, every_s: float | None):
        record_dir = Path(record_dir)
        self.path = record_dir.with_name(record_dir.name + SUFFIX)
        self.fingerprint, self.every_s = fingerprint, every_s
        self._last = time.monotonic()
        self.saved = 0

    @property
    def enabled(self) -> bool:
        return self.every_s is not None

    def load(self) -> dict[str, torch.Tensor] | None:
        """The saved state, if there is one for this fingerprint."""
        if not self.enabled or not self.path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(self.path), "pt") as handle:
                if (handle.metadata() or {}).get("fingerprint") != self.fingerprint:
                    return None
            state = load_file(str(self.path))
        except (OSError, SafetensorError):
            return None
        log.info("resuming the inversion from %s", self.path)
        return state

    def on_step(self, state) -> None:
        """Called after every step with a thunk giving the state; saves when the interval has passed."""
        if self.enabled and time.monotonic() - self._last >= self.every_s:
            tensors = {k: v.detach().cpu().contiguous() for k, v in state().items()}
            with atomic_path(self.path) as tmp:
                save_file(tensors, str(tmp), metadata={"fingerprint": self.fingerprint})
            self._last = time.monotonic()
            self.saved += 1

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
