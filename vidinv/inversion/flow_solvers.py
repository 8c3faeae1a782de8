"""Second-order flow inversion (docs/methods.md §7): RF-Solver and FireFlow on a rectified-flow
model's sigma grid (SD3, Flux, Wan 2.1), as inversion methods and the step rules of their records.

One step moves z from the level sigma_a to sigma_b, h = sigma_b - sigma_a (negative when sampling,
positive when inverting), with the model's velocity v = dz/dsigma at timestep t = 1000 sigma:

RF-Solver (Wang et al., arXiv 2411.04746, as the authors' sampler computes it): a second-order
Taylor step whose derivative of v comes from a midpoint velocity, two evaluations per step,

    v_a   = v(z, t_a)
    z_mid = z + (h / 2) v_a
    v_mid = v(z_mid, 1000 (sigma_a + h / 2))
    z'    = z + h v_a + (h^2 / 2) (v_mid - v_a) / (h / 2)

FireFlow (Deng et al., arXiv 2412.07517, the authors' `denoise_fireflow`): the midpoint step with
the start velocity taken from the previous step's midpoint, one evaluation per step (two at the
first), N + 1 for N steps,

    v_a   = v_mid of the previous step (the first step: v(z, t_a))
    z_mid = z + (h / 2) v_a
    v_mid = v(z_mid, 1000 (sigma_a + h / 2))
    z'    = z + h v_mid

Inversion runs the step up the grid from the clean latent (inversion step i: sigma_{i+1} ->
sigma_i, the first evaluation at the latent it has, as `flow` does), regeneration runs it down
(`Sampler.sample` through `advance`); so the record keeps `flow`'s layout (latents[0] the
noisiest, latents[i] at sigma_i) and every edit method reads it as a flow record. An edit's branch
loop (PnP) has one prediction per step and steps these records with `step`, the Euler step of the
same grid. Every operation is elementwise over the latents: the rule does not depend on how many
(latent) frames a call holds.

With `inversion.freeinv: true` the model is seen through FreeInv's transform of each step
(`inversion.transforms`, `inversion.seed`): step i's evaluations, both of them, run through
f_i (transform the latent, run the model, transform the velocity back); with `transforms: none`
the result is the plain method's bit for bit.
"""

from __future__ import annotations

import torch

from vidinv import transforms as tf
from vidinv.inversion.ddim import invert_steps
from vidinv.inversion.flow import FlowSampler, at_step
from vidinv.inversion.freeinv import FreeInvEps
from vidinv.inversion.methods import InversionMethod
from vidinv.inversion.timesteps import level

VELOCITY = "velocity"  # a checkpoint's carried velocity (FireFlow): the state beside the latents


def midpoint_timestep(table, a: int, b: int) -> torch.Tensor:
    """The model's timestep halfway between the levels a and b: 1000 (sigma_a + (sigma_b - sigma_a) / 2)
    (float32, as the table's)."""
    s_a, s_b = table.sigmas[a], table.sigmas[b]
    return (s_a + (s_b - s_a) / 2) * table.num_train_timesteps


class RFSolverSampler(FlowSampler):
    """RF-Solver's second-order step on the record's sigma grid (module docstring): two model
    evaluations per step; `step` (one prediction, the edit's branch loop) is the grid's Euler step."""

    name = "rf_solver"
    reuses_velocity = False  # FireFlow: a step's midpoint velocity starts the next step

    @classmethod
    def evaluations(cls, steps: int) -> int:
        return 2 * steps

    @staticmethod
    def update(z: torch.Tensor, h: torch.Tensor, v_a: torch.Tensor, v_mid: torch.Tensor) -> torch.Tensor:
        """z' from the start and midpoint velocities: z + h v_a + (h^2 / 2) dv/dsigma."""
        derivative = (v_mid - v_a) / (h / 2)
        return z + h * v_a + (h**2 / 2) * derivative

    def move(self, model, z: torch.Tensor, a: int, b: int, t_a, v_a: torch.Tensor | None = None):
        """z at level a moved to level b: (z', the velocity the next step starts from or None).
        `model` is the step's (FreeInv's transform of the step: both evaluations use it); `v_a`:
        the start velocity when it is carried over (FireFlow), else v(z, t_a) is evaluated."""
        sigmas = self.table.sigmas
        h = level(sigmas, b, z) - level(sigmas, a, z)
        if v_a is None:
            v_a = model(z, t_a)
        v_mid = model(z + (h / 2) * v_a, midpoint_timestep(self.table, a, b))
        return self.update(z, h, v_a, v_mid), (v_mid if self.reuses_velocity else None)

    def advance(self, model, z, i, carry=None):
        return self.move(at_step(model, i), z, i, i + 1, self.table.timesteps[i], carry)

    def invert(self, model, x0, *, progress=False, desc="inversion", done=None, on_step=None, out=None, **inputs):
        table, n = self.table, len(self.table)
        carry = {"v": None if done is None or VELOCITY not in done else done[VELOCITY].to(x0.device)}

        def step(z, i):
            z, carry["v"] = self.move(at_step(model, i), z, i + 1, i, table.inversion_timestep(i), carry["v"])
            return z

        def with_velocity(state):  # the carried velocity is part of the loop's state (bit-exact resume)
            return lambda: {**state(), VELOCITY: carry["v"]} if carry["v"] is not None else state()

        latents = invert_steps(
            step,
            x0,
            n,
            progress=progress,
            desc=desc,
            done=None if done is None else done["latents"],
            on_step=None if on_step is None else (lambda state: on_step(with_velocity(state))),
            out=None if out is None else out["latents"],
        )
        return {"latents": latents}


class FireFlowSampler(RFSolverSampler):
    """FireFlow's step (module docstring): RF-Solver's midpoint step with the start velocity carried
    over from the previous step's midpoint, N + 1 model evaluations for N steps."""

    name = "fireflow"
    reuses_velocity = True

    @classmethod
    def evaluations(cls, steps: int) -> int:
        return steps + 1 if steps else 0

    @staticmethod
    def update(z, h, v_a, v_mid):
        return z + h * v_mid


class RFSolverInversion(InversionMethod):
    """RF-Solver inversion on a flow model (module docstring), FreeInv's transforms with `inversion.freeinv`."""

    name = "rf_solver"
    sampler = "rf_solver"
    composes_freeinv = True  # `inversion.freeinv` applies

    def fingerprint_fields(self):
        c = self.config
        return {"freeinv": True, "transforms": c.transforms, "seed": c.seed} if c.freeinv else {}

    def prepare(self, record, latent_size):
        c = self.config
        record.group = list(tf.group_for(c.transforms, *latent_size)) if c.freeinv else ["id"]
        record.transforms = self.step_transforms(record.steps, latent_size)

    def step_transforms(self, steps, latent_hw):
        if not self.config.freeinv:
            return ["id"] * steps
        return tf.schedule(tf.group_for(self.config.transforms, *latent_hw), steps, self.config.seed)

    def wrap(self, model, record, table):
        """The record's transform of each step (all identity without FreeInv: the model itself, bit for bit)."""
        return FreeInvEps(model, table, record.transforms)

    def describe(self, record):
        return {"transforms": list(record.transforms)}


class FireFlowInversion(RFSolverInversion):
    """FireFlow inversion on a flow model (module docstring), FreeInv's transforms with `inversion.freeinv`."""

    name = "fireflow"
    sampler = "fireflow"
