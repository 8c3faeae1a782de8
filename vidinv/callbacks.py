"""The step callback's argument: one `Step` per finished step of a loop, in every layer.

The loops (`Sampler.sample`, the inversion, the edit methods) call `callback(step)` after each
step; `VideoEditor`'s `callback_on_step_end` receives the same object (as k-diffusion's callback
receives one dict of named values, here a frozen dataclass).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Step:
    """One finished step. `index` of `total`: the reconstruction and the branch edits (PnP,
    TokenFlow, FateZero) count by the step's index in the table, from their start step (T_skip
    for an edit-friendly record); the inversion by the steps it has done, 0 first; FlowEdit by its
    steps, 0 first, of the n_max it runs."""

    stage: str  # "inversion" | "reconstruction" | "edit"
    index: int
    total: int
    timestep: float | None  # the timestep of the step's level in the table (sampling order)
    latents: torch.Tensor | None  # the latents after the step (the edit branch's); None for the inversion


StepCallback = Callable[[Step], None]


def step_callback(callback: Callable | None) -> StepCallback | None:
    """`callback` as a `StepCallback`: called with the `Step`, or, when it cannot take one argument
    but takes four (the form before `Step`), with (stage, index, total, latents)."""
    if callback is None or takes_one_argument(callback):
        return callback
    return lambda step: callback(step.stage, step.index, step.total, step.latents)


def takes_one_argument(callback: Callable) -> bool:
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # no signature to read (some builtins): the documented form
        return True
    try:
        signature.bind(None)
    except TypeError:
        return False
    return True
