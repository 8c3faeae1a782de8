"""Inversion methods: the `InversionMethod` protocol and the built-in methods.

The pipeline calls, in this order:

    method = get_inversion_method(name)(config.inversion)
    method.fingerprint_fields()          what besides prompt/steps/model changes the result
    method.prepare(record, (h, w))       fill the record's method fields (transform schedule, group)
    method.inversion_inputs(x0, steps)   extra inputs of the sampler's invert (DDPM-EF: the noise)
    method.evaluations_per_step(hw)      model evaluations per step and row (MBDI: |G|; for plans)
    method.wrap(model, record, table)    the model as the method sees it, at inversion AND at every
                                         regeneration / edit of the record (FreeInv's transform of
                                         step i, MBDI's group mean)

and samples with `SAMPLERS.get(method.sampler)`. Everything a method decides at inversion time
is written to the record, so a record alone says how to regenerate from it.

Register a new method with `register_inversion_method(name, cls)` or an entry point in the
group `vidinv.inversion_methods`; see docs/architecture.md.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from vidinv import transforms as tf
from vidinv.inversion.freeinv import FreeInvEps, GroupMeanEps
from vidinv.inversion.timesteps import StepTable
from vidinv.registry import INVERSION_METHODS


class InversionMethod:
    """Base class: plain DDIM-family inversion with no transform (override what differs)."""

    name: ClassVar[str] = ""
    sampler: ClassVar[str] = "ddim"  # the step rule (vidinv.registry.SAMPLERS)
    default_guidance: ClassVar[float] = 1.0  # inversion.guidance_scale when null

    def __init__(self, config):
        self.config = config  # the inversion section (vidinv.config.InversionConfig)

    def guidance(self) -> float:
        g = self.config.guidance_scale
        return self.default_guidance if g is None else float(g)

    def fingerprint_fields(self) -> dict:
        """Config fields of this method that change the inversion's result."""
        return {}

    def prepare(self, record, latent_size: tuple[int, int]) -> None:
        """Set the record's method fields before the inversion runs."""
        record.group = ["id"]
        record.transforms = ["id"] * record.steps

    def evaluations_per_step(self, latent_hw: tuple[int, int]) -> int:
        """Model evaluations per step and prompt row for latents of this size (`vidinv plan`)."""
        return 1

    def step_transforms(self, steps: int, latent_hw: tuple[int, int]) -> list[str]:
        """The transform each step sees the model through, for an edit that runs without this
        method's record (FlowEdit): the identity here."""
        return ["id"] * steps

    def inversion_inputs(self, x0: torch.Tensor, steps: int) -> dict:
        """Extra keyword inputs of the sampler's `invert`."""
        return {}

    def wrap(self, model, record, table: StepTable):
        """The model seen through the method (identity here)."""
        return model

    def describe(self, record) -> dict:
        """Method facts for metrics.json."""
        return {}


class DDIMInversion(InversionMethod):
    """DDIM inversion (docs/methods.md §1)."""

    name = "ddim"


class FlowInversion(InversionMethod):
    """Rectified-flow inversion: the Euler reversal of a flow-matching model's grid (`vidinv.inversion.flow`)."""

    name = "flow"
    sampler = "flow"


class FreeInvInversion(InversionMethod):
    """FreeInv (Bao et al. 2025): one random exact transform per step, shared by every frame."""

    name = "freeinv"

    def fingerprint_fields(self):
        return {"transforms": self.config.transforms, "seed": self.config.seed}

    def prepare(self, record, latent_size):
        record.group = list(tf.group_for(self.config.transforms, *latent_size))
        record.transforms = self.step_transforms(record.steps, latent_size)

    def step_transforms(self, steps, latent_hw):
        return tf.schedule(tf.group_for(self.config.transforms, *latent_hw), steps, self.config.seed)

    def wrap(self, model, record, table):
        return FreeInvEps(model, table, record.transforms)

    def describe(self, record):
        return {"transforms": list(record.transforms)}


class MBDIInversion(InversionMethod):
    """Multi-branch inversion: the mean over the whole transform group every step (|G| x the cost)."""

    name = "mbdi"

    def fingerprint_fields(self):
        return {"transforms": self.config.transforms}

    def evaluations_per_step(self, latent_hw):
        return len(tf.group_for(self.config.transforms, *latent_hw))

    def prepare(self, record, latent_size):
        record.group = list(tf.group_for(self.config.transforms, *latent_size))
        record.transforms = ["id"] * record.steps

    def wrap(self, model, record, table):
        return GroupMeanEps(model, record.group)

    def describe(self, record):
        return {"group": list(record.group)}


class EditFriendlyDDPMInversion(InversionMethod):
    """Edit-friendly DDPM inversion (Huberman-Spiegelglas et al. 2024): exact regeneration."""

    name = "ddpm_ef"
    sampler = "ddpm_ef"
    default_guidance = 3.5  # the paper's cfg_src

    def fingerprint_fields(self):
        return {"seed": self.config.seed, "noise": self.config.noise}

    def inversion_inputs(self, x0, steps):
        shared = self.config.noise == "shared"
        return {"noise": SeededNoise(tuple(x0.shape), steps, seed=self.config.seed, shared=shared, dtype=x0.dtype)}

    def describe(self, record):
        return {"noise": record.noise}


class SeededNoise:
    """Per-step noise n (N, f or 1, c, h, w) for edit-friendly inversion, from a seeded CPU
    generator, drawn when a step reads it: `noise[i]` is step i's map (sampling order).

    Drawn in ascending-t order (the order LEDITS++ draws it), stored in sampling order, so the
    first step reads the last draw: the generator's state before each draw is kept (a few KB per
    step) and `noise[i]` draws its map again from that state, bit for bit, instead of holding N
    latent-sized maps beside the record. `shared` draws one map per step for all frames.
    """

    def __init__(self, shape: tuple[int, ...], steps: int, *, seed: int, shared: bool, dtype=torch.float32):
        f, *rest = shape
        self.shape, self.dtype = (1 if shared else f, *rest), dtype
        generator = torch.Generator("cpu").manual_seed(int(seed))
        self._states = []
        for _ in range(steps):
            self._states.append(generator.get_state())
            torch.randn(self.shape, generator=generator, dtype=dtype)  # moves the generator past this draw

    def __len__(self) -> int:
        return len(self._states)

    def __getitem__(self, i: int) -> torch.Tensor:
        generator = torch.Generator("cpu")
        generator.set_state(self._states[len(self) - 1 - i])
        return torch.randn(self.shape, generator=generator, dtype=self.dtype)


def ef_noise(shape: tuple[int, ...], steps: int, *, seed: int, shared: bool, dtype=torch.float32) -> torch.Tensor:
    """`SeededNoise` as one tensor (N, f or 1, c, h, w), sampling order."""
    noise = SeededNoise(shape, steps, seed=seed, shared=shared, dtype=dtype)
    return torch.stack([noise[i] for i in range(steps)])


def register_inversion_method(name: str, cls: type[InversionMethod], *, replace: bool = False) -> None:
    """Make `cls` available as `inversion.method: name` (config, CLI, API)."""
    INVERSION_METHODS.register(name, cls, replace=replace)


def get_inversion_method(name: str) -> type[InversionMethod]:
    return INVERSION_METHODS.get(name)
