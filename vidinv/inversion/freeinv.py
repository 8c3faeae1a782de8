"""FreeInv and MBDI as wrappers around any eps(z, t) callable.

FreeInv (Bao et al. 2025, arXiv 2503.23035): at step i predict the noise through the step's
transform f_i, e = f_i^{-1}(eps(f_i(z), t_i)); the latent update itself is untransformed. The
transform acts on the last two axes, so every frame (and every chunk of frames) of the clip gets
the same one. MBDI (multi-branch inversion) averages over the whole group every step: the
ensemble FreeInv approximates at 1/|G| of the cost.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from vidinv import transforms
from vidinv.inversion.timesteps import StepTable


@contextmanager
def oriented(eps, name: str):
    """`eps` (a `ControlledCall`) in the orientation of transform `name` for the block: it applies
    the transform to each pass of its UNet calls, and its spatial side inputs (ControlNet
    conditions) are transformed with the latent."""
    saved, eps.orientation = eps.orientation, name
    try:
        yield
    finally:
        eps.orientation = saved


def transformed(eps, name: str):
    """eps seen through one transform: z -> f^{-1}(eps(f(z), t)) (identity returns eps unchanged).

    A callable with an `orientation` (`ControlledCall`) transforms each pass itself
    (`vidinv.attention.run_unet`'s `transform`), so no transformed copy of the clip is made; any
    other callable gets the whole clip transformed."""
    if name == "id":
        return eps

    if hasattr(eps, "orientation"):

        def eps_oriented(z: torch.Tensor, t) -> torch.Tensor:
            with oriented(eps, name):
                return eps(z, t)

        return eps_oriented

    def eps_f(z: torch.Tensor, t) -> torch.Tensor:
        return transforms.invert(name, eps(transforms.apply(name, z), t))

    return eps_f


class FreeInvEps:
    """eps(z, t) through the transform scheduled for t's step; `at_step(i)` gives step i's callable."""

    def __init__(self, eps, table: StepTable, schedule: list[str]):
        if len(schedule) != len(table):
            raise ValueError(f"transform schedule has {len(schedule)} entries for {len(table)} steps")
        self.eps = eps
        self.table = table
        self.schedule = list(schedule)

    def name_at(self, i: int) -> str:
        return self.schedule[i]

    def at_step(self, i: int):
        return transformed(self.eps, self.schedule[i])

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        return self.at_step(self.table.index_of(t))(z, t)


class GroupMeanEps:
    """MBDI: e = (1/|G|) sum_g g^{-1}(eps(g(z), t)), |G| UNet passes per step."""

    def __init__(self, eps, group: tuple[str, ...] | list[str]):
        self.eps = eps
        self.group = tuple(group)

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        total = None
        for name in self.group:
            e = transformed(self.eps, name)(z, t)
            total = e if total is None else total + e
        return total / len(self.group)
