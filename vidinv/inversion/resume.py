"""Resumable inversions: the state of a running inversion, saved every `runtime.checkpoint_seconds`
and at once on Ctrl-C (`vidinv.interrupts`) beside the record folder (`<record>.resume.safetensors`),
picked up by the next run with the same fingerprint and removed once the record is complete.

The checkpoint never looks like a record: it has its own name, is written atomically (a kill -9
leaves the last complete one), and carries the fingerprint of the config and input it belongs
to. It holds the loop's own tensors bit for bit, so a resumed run gives the uninterrupted record.

A record kept on disk (`runtime.record: disk`) is its own checkpoint (`PartialRecord`): the loop
writes every step into the record's file in its temporary folder, and a checkpoint only makes
those writes durable and names the steps they hold (progress.json, atomic), so saving one costs
nothing that grows with the clip.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vidinv.interrupts import Interrupted, requested
from vidinv.inversion.record import PROGRESS_NAME, TENSORS_NAME
from vidinv.inversion.step_file import create, open_tensors, write_tensors
from vidinv.outputs import atomic_path, make_folder, partial_name, write_text

log = logging.getLogger("vidinv")
SUFFIX = ".resume.safetensors"
LOOP_STATE_NAME = "loop_state.safetensors"  # a partial record's loop tensors that are not record steps


class Checkpoint:
    """Save/load the partial state of one inversion (a dict of tensors) for one fingerprint."""

    def __init__(self, record_dir: str | Path, fingerprint: str, every_s: float | None, *, off_reason: str = ""):
        record_dir = Path(record_dir)
        self.path = record_dir.with_name(record_dir.name + SUFFIX)
        self.fingerprint, self.every_s = fingerprint, every_s
        self.off_reason = off_reason or "runtime.checkpoint_seconds is null"  # why `every_s` is None
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

    def due(self) -> bool:
        """Whether the interval since the last save has passed."""
        return self.enabled and time.monotonic() - self._last >= self.every_s

    def save(self, state: dict[str, torch.Tensor]) -> None:
        """Write the state atomically (the previous checkpoint stays until the new one is complete)."""
        with atomic_path(self.path) as tmp:  # a step at a time: no copy of the state in memory
            write_tensors(tmp, {k: v.detach() for k, v in state.items()}, {"fingerprint": self.fingerprint})
        self._last = time.monotonic()
        self.saved += 1

    def storage(self, specs: dict) -> dict | None:
        """Where the loop writes the record's tensors: in memory (None) for this checkpoint."""
        return None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class PartialRecord(Checkpoint):
    """The record on disk while its inversion runs: its tensors file in `partial_name(record_dir)`,
    written step by step, and the checkpoint of the run (module docstring)."""

    def __init__(self, record_dir: str | Path, fingerprint: str, every_s: float | None, *, off_reason: str = ""):
        super().__init__(record_dir, fingerprint, every_s, off_reason=off_reason)
        self.path = partial_name(Path(record_dir))
        self._tensors, self._progress, self._loop_state = {}, None, False

    def storage(self, specs: dict) -> dict:
        """The record's file laid out for `specs` ({name: (dtype, shape)}), opened for writing: the
        one an interrupted run left when it can resume (same fingerprint and layout), else a new one."""
        self._tensors = self._resumable(specs)
        if self._tensors is None:
            self._progress = None
            shutil.rmtree(self.path, ignore_errors=True)
            make_folder(self.path)
            self._tensors = create(self.path / TENSORS_NAME, specs, {"fingerprint": self.fingerprint})
        return self._tensors

    def _resumable(self, specs: dict) -> dict | None:
        if not self.enabled or not (self.path / PROGRESS_NAME).is_file():
            return None
        try:
            progress = json.loads((self.path / PROGRESS_NAME).read_text(encoding="utf-8"))
            if progress.get("fingerprint") != self.fingerprint:
                return None
            tensors = open_tensors(self.path / TENSORS_NAME, writable=True)
        except (OSError, ValueError):
            return None
        layout = {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}
        if layout != {name: (dtype, tuple(shape)) for name, (dtype, shape) in specs.items()}:
            return None
        self._progress, self._loop_state = progress["state"], bool(progress.get("loop_state"))
        return tensors

    def load(self) -> dict | None:
        """The state the last checkpoint named: views of the file's written steps, and the loop's
        own tensors beside them (`LOOP_STATE_NAME`: e.g. FireFlow's carried velocity)."""
        if not self._progress:
            return None
        log.info("resuming the inversion from %s", self.path)
        views = {
            key: self._tensors[name][first : first + count] for key, (name, first, count) in self._progress.items()
        }
        extra = self.path / LOOP_STATE_NAME
        return {**views, **(load_file(str(extra)) if self._loop_state and extra.is_file() else {})}

    def save(self, state: dict) -> None:
        """Make the written steps durable, write the loop's tensors that are not record steps (a
        latent at most), then name them all (progress.json, written atomically)."""
        entries, loop_state = {}, {}
        for key, view in state.items():
            for name, tensor in self._tensors.items():
                first = view.position_in(tensor) if hasattr(view, "position_in") else None
                if first is not None:
                    entries[key] = [name, first, len(view)]
                    break
            else:
                loop_state[key] = view.detach()
        next(iter(self._tensors.values())).flush()  # one file holds them all
        if loop_state:
            with atomic_path(self.path / LOOP_STATE_NAME) as tmp:
                write_tensors(tmp, loop_state, {"fingerprint": self.fingerprint})
        self._loop_state = bool(loop_state)
        progress = {"fingerprint": self.fingerprint, "state": entries, "loop_state": sorted(loop_state)}
        write_text(self.path / PROGRESS_NAME, json.dumps(progress))
        self._last = time.monotonic()
        self.saved += 1

    def clear(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def steps_done(state: dict | None) -> int:
    """Steps finished in an inversion state (a checkpoint's, or `on_step`'s)."""
    if not state:
        return 0
    return len(state["zs"]) if "zs" in state else len(state["latents"]) - 1


def step_hook(checkpoint: Checkpoint | None, total: int):
    """The inversion's `on_step(state)` (state: a thunk giving the loop's state after a step):
    saves the checkpoint when due, and after a first Ctrl-C saves it at once and raises
    `Interrupted` ("interrupted at inversion step k of N; ...")."""

    def on_step(state) -> None:
        stop = requested()
        if checkpoint is not None and checkpoint.enabled and (stop or checkpoint.due()):
            checkpoint.save(state())
        if stop:
            raise Interrupted("inversion", steps_done(state()), total, _what_is_kept(checkpoint))

    return on_step


def _what_is_kept(checkpoint: Checkpoint | None) -> str:
    if checkpoint is None:
        return "no checkpoint (no record folder)"
    if checkpoint.enabled:
        return "checkpoint saved — rerun the same command to resume"
    return f"no checkpoint ({checkpoint.off_reason}) — a rerun starts the inversion over"


def window_checkpoints(checkpoint: Checkpoint | None, total: int, first, replay: list, on_step, device):
    """(a `WindowLog`, the inversion's `on_step` wrapped) for an inversion whose model calls run in
    temporal windows (`vidinv.attention.windows`): every window boundary is a checkpoint boundary. After
    each window the checkpoint is saved when due (at once after a first Ctrl-C, which then stops with
    `Interrupted`): the state of the last finished step (`first()`: the clip's, before any) and the
    outputs of the windows of the step in flight so far, which a resumed run replays (`replay`: those
    of the checkpoint it resumes) instead of running them again."""
    from vidinv.attention.windows import WindowLog

    keep = checkpoint is not None and checkpoint.enabled
    last = {"state": first}

    def on_window(log, k: int, count: int) -> None:
        stop = requested()
        if keep and (stop or checkpoint.due()):
            checkpoint.save({**last["state"](), **log.state()})
        if stop:
            done = steps_done(last["state"]())
            kept = _what_is_kept(checkpoint)
            where = f"window {k + 1} of {count} of step {done + 1} done"
            raise Interrupted("inversion", done, total, f"{where}; {kept}")

    log = WindowLog([part.to(device) for part in replay], on_window, keep=keep)

    def after_step(state) -> None:
        last["state"] = state
        log.step_done()
        on_step(state)

    return log, after_step
