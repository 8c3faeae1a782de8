"""Ctrl-C at step boundaries: the first SIGINT stops a sampling loop after its current step, the
second interrupts at once.

    with interrupts.deferred():              # around a loop (the inversion, the edit)
        for i in range(n):
            step(i)
            if interrupts.requested():        # a step boundary: keep what a rerun needs, then
                raise Interrupted("inversion", i + 1, n, "checkpoint saved — rerun the same command to resume")

Inside `deferred` the first SIGINT only sets the flag (nothing is printed); the second restores
Python's handling and raises KeyboardInterrupt where the program is. A request no step boundary
took is raised as KeyboardInterrupt when the block ends, so a Ctrl-C is never lost. Outside
`deferred` (loading, encoding, decoding) SIGINT is Python's KeyboardInterrupt as always. Only the
main thread with Python's default SIGINT handler is changed; anywhere else `deferred` does nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_requested = False
_active = False


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C taken at a step boundary: `stage` stopped after `step` of its `total` steps;
    `detail` says what was kept (the CLI prints `vidinv: <str>` and exits 130)."""

    def __init__(self, stage: str, step: int, total: int, detail: str = ""):
        super().__init__(stage, step, total, detail)
        self.stage, self.step, self.total, self.detail = stage, step, total, detail

    def __str__(self) -> str:
        where = f"interrupted at {self.stage} step {self.step} of {self.total}"
        return f"{where}; {self.detail}" if self.detail else where


def requested() -> bool:
    """True once a first Ctrl-C arrived inside `deferred` (checked at step boundaries)."""
    return _requested


@contextlib.contextmanager
def deferred():
    """Defer the first SIGINT to the next step boundary for the block (module docstring)."""
    global _active, _requested
    if (
        _active
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def first_then_at_once(signum, frame):
        global _requested
        if _requested:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        _requested = True

    _active, _requested = True, False
    signal.signal(signal.SIGINT, first_then_at_once)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        pending, _active, _requested = _requested, False, False
    if pending:
        raise KeyboardInterrupt
