"""Samplers: the step rule of a record, chosen once from `record.sampler`.

A sampler inverts a clip (building the record's tensors) and regenerates from it, one step
index at a time: `step(z, pred, i)` moves the latent z at timesteps[i] one level down given the
model's prediction at z. Every caller (reconstruction, the edit's branches) goes through
`step`, so no code elsewhere asks which method made the record. Each step rule is one subclass
registered in `vidinv.registry.SAMPLERS`: DDIM and edit-friendly DDPM here, the flow-matching Euler
step in `vidinv.inversion.flow` (`FlowSampler`); a new rule is one more.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from tqdm.auto import tqdm

from vidinv.callbacks import Step, StepCallback
from vidinv.inversion.ddim import ddim_invert, ddim_sample_step
from vidinv.inversion.ddpm_ef import ddpm_ef_invert, ddpm_ef_sample_step
from vidinv.inversion.timesteps import StepTable, work_dtype
from vidinv.registry import SAMPLERS

EF_SKIP_FRACTION = 0.36


class Sampler:
    """The step rule of one record (its table, prediction type and stored tensors)."""

    name: ClassVar[str]
    # regenerating from the record reproduces its latents at every step, so a source branch can
    # read them from the record instead of running the sampler
    exact: ClassVar[bool] = False
    # the step is deterministic (no stored noise): a flow-matching model runs it as its Euler step
    deterministic: ClassVar[bool] = False

    def __init__(self, table: StepTable, record=None, *, prediction_type: str = "epsilon"):
        self.table, self.record, self.prediction_type = table, record, prediction_type

    def invert(
        self, model, x0: torch.Tensor, *, progress=False, desc="inversion", done=None, on_step=None, out=None, **inputs
    ):
        """The record's tensors for x0: {"latents": (N+1, f c h w), ...}. `done`/`on_step`: resuming;
        `out`: the record's file to write them into ({name: StepFile}, shaped as `tensor_steps` says)."""
        raise NotImplementedError

    @classmethod
    def tensor_steps(cls, n: int) -> dict[str, int]:
        """The record's tensors for n steps and the steps each holds: latents at the N+1 levels."""
        return {"latents": n + 1}

    def step(self, z: torch.Tensor, pred: torch.Tensor, i: int) -> torch.Tensor:
        raise NotImplementedError

    def advance(self, model, z: torch.Tensor, i: int, carry=None):
        """Regeneration step i with the model: (z one level down, what the next step is handed).
        One evaluation and `step` here; a multi-evaluation rule (`vidinv.inversion.flow_solvers`)
        evaluates the model more than once, `carry` being what its previous step left (FireFlow's velocity)."""
        return self.step(z, model(z, self.table.timesteps[i]), i), None

    @classmethod
    def evaluations(cls, steps: int) -> int:
        """Model evaluations (per prompt row and transform) of `steps` steps of this rule, an
        inversion's or a regeneration's: one per step here (`vidinv plan`)."""
        return steps

    def default_start(self, skip: int | None) -> int:
        """The step regeneration and editing start from (latents[start] is their first latent)."""
        return 0

    def inversion_latent(self, i: int) -> torch.Tensor:
        """The latent at which the inversion evaluated the model at step i (for recomputing its maps)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(
        self,
        model,
        z: torch.Tensor,
        *,
        start: int = 0,
        progress=False,
        desc="sampling",
        stage: str = "reconstruction",
        callback: StepCallback | None = None,
    ):
        """Regenerate from the latent z at timesteps[start] down to the clean level; returns (f c h w).
        `callback(Step(stage, i, N, t_i, latents))` is called after every step i. The one sampling
        loop: reconstructions, plug-in edits, tests and scripts all run it."""
        z = z.to(work_dtype(z.dtype))
        n, carry = len(self.table), None
        for i in tqdm(range(start, n), total=n - start, desc=desc, disable=not progress, leave=False):
            z, carry = self.advance(model, z, i, carry)
            if callback is not None:
                callback(Step(stage, i, n, self.table.t(i), z))
        return z


class DDIMSampler(Sampler):
    """DDIM, eta = 0 (Song et al. 2021, eq. 12): deterministic, inverted by running the step upwards."""

    name = "ddim"
    deterministic = True

    def invert(self, model, x0, *, progress=False, desc="ddim inversion", done=None, on_step=None, out=None, **inputs):
        done_latents = None if done is None else done["latents"]
        latents = ddim_invert(
            model,
            x0,
            self.table,
            prediction_type=self.prediction_type,
            progress=progress,
            desc=desc,
            done=done_latents,
            on_step=on_step,
            out=None if out is None else out["latents"],
        )
        return {"latents": latents}

    def step(self, z, pred, i):
        return ddim_sample_step(z, pred, self.table, i, self.prediction_type)

    def inversion_latent(self, i):
        return self.record.latents[i + 1]  # inversion step i evaluated the model at z_{t-1}


class EditFriendlyDDPMSampler(Sampler):
    """DDPM (eta = 1) with the record's edit-friendly noise maps: regeneration is exact."""

    name = "ddpm_ef"
    exact = True

    def __init__(self, table: StepTable, record=None, *, prediction_type: str = "epsilon", noise_maps=None):
        """`noise_maps` (N, f c h w): sampling with these maps instead of the record's (no record needed)."""
        super().__init__(table, record, prediction_type=prediction_type)
        self.noise_maps = noise_maps

    def invert(
        self, model, x0, *, progress=False, desc="ddpm-ef inversion", done=None, on_step=None, out=None, noise=None
    ):
        latents, zs = ddpm_ef_invert(
            model,
            x0,
            self.table,
            noise,
            prediction_type=self.prediction_type,
            progress=progress,
            desc=desc,
            done=done,
            on_step=on_step,
            out=out,
        )
        return {"latents": latents, "noise_maps": zs}

    @classmethod
    def tensor_steps(cls, n):
        return {"latents": n + 1, "noise_maps": n}  # + the noise map of every step

    def step(self, z, pred, i):
        zs = self.record.noise_maps if self.noise_maps is None else self.noise_maps
        return ddpm_ef_sample_step(z, pred, self.table, i, zs, self.prediction_type)

    def default_start(self, skip):
        """T_skip: `skip` steps, or round(0.36 * steps) (the paper's 36 of 100)."""
        return round(EF_SKIP_FRACTION * len(self.table)) if skip is None else int(skip)

    def inversion_latent(self, i):
        return self.record.latents[i]  # edit-friendly inversion: the model at x_t itself


def sampler_for(record, table: StepTable) -> Sampler:
    """The record's sampler (one per record, from `record.sampler`)."""
    return SAMPLERS.get(record.sampler)(table, record, prediction_type=record.prediction_type)
