"""Rectified-flow inversion and sampling (SD3, Flux): Euler steps on a flow-matching sigma grid.

The grid is diffusers' `FlowMatchEulerDiscreteScheduler`'s, with its shift (and Flux's dynamic
shift mu from the image sequence length, as its pipeline sets it): sigma_0 = 1 > ... > sigma_N = 0,
timesteps t_i = 1000 sigma_i. The model predicts the velocity v = dz/dsigma (z_sigma =
(1 - sigma) x0 + sigma noise, so v = noise - x0). In sampling order (latents[0] the noisiest):

    sampling step i:   z_{i+1} = z_i + (sigma_{i+1} - sigma_i) v(z_i, t_i)              (Euler)
    inversion step i:  z_i     = z_{i+1} + (sigma_i - sigma_{i+1}) v(z_{i+1}, 1000 sigma_{i+1})

so inversion evaluates the model at the latent it has (the level below), and regeneration from
the record is not exact: its error shrinks with the step size. FreeInv / MBDI wrap the model as
they do for DDIM; the step index of an inversion step is passed through `at_step(i)`, since its
timestep is that of the step below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vidinv.errors import VidinvError
from vidinv.inversion.ddim import invert_steps
from vidinv.inversion.samplers import Sampler
from vidinv.inversion.timesteps import level

FLOW_SAMPLER = "flow"


@dataclass(frozen=True)
class FlowTable:
    """The discretisation of one flow run: N timesteps (descending) and the N+1 sigmas."""

    timesteps: torch.Tensor  # (N,) float32 = 1000 sigma_i (sampling order)
    sigmas: torch.Tensor  # (N+1,) float32, sigmas[N] = 0
    num_train_timesteps: int

    def __len__(self) -> int:
        return len(self.timesteps)

    def t(self, i: int) -> float:
        return float(self.timesteps[i])

    def index_of(self, t) -> int:
        """The sampling step whose timestep is t."""
        matches = (self.timesteps == torch.as_tensor(t, dtype=self.timesteps.dtype)).nonzero()
        if len(matches) != 1:
            raise KeyError(f"timestep {float(t)} is not in this table")
        return int(matches[0, 0])

    def inversion_timestep(self, i: int) -> torch.Tensor:
        """The model's timestep at inversion step i: 1000 sigma_{i+1} (0 for the last step)."""
        return self.timesteps[i + 1] if i + 1 < len(self) else torch.zeros((), dtype=self.timesteps.dtype)

    def to_list(self) -> list[float]:
        return [float(t) for t in self.timesteps]


def is_flow_scheduler(scheduler) -> bool:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return isinstance(scheduler, FlowMatchEulerDiscreteScheduler)


def image_seq_len(latent_hw: tuple[int, int], patch: int = 2) -> int:
    """Image tokens of a latent (h, w) in 2x2 patches (Flux's packing, SD3's patch embedding)."""
    return (latent_hw[0] // patch) * (latent_hw[1] // patch)


def dynamic_shift(config, seq_len: int) -> float:
    """Flux's mu: linear in the image sequence length between (base_image_seq_len, base_shift) and
    (max_image_seq_len, max_shift) (diffusers' `calculate_shift`)."""
    m = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
    return seq_len * m + config.base_shift - m * config.base_image_seq_len


def flow_table(
    scheduler,
    steps: int,
    latent_hw: tuple[int, int] | None = None,
    *,
    tokens: int | None = None,
    linspace: bool = False,
) -> FlowTable:
    """The N-step grid of a flow-matching scheduler as its pipeline sets it: SD3's `set_timesteps(N)`,
    or, with dynamic shifting (Flux, LTX-Video), sigmas linspace(1, 1/N, N) shifted by mu of the
    sequence length: `tokens` (`flow_table_for`), else the 2x2-packed image tokens of `latent_hw`;
    `linspace` (`Family.linspace_sigmas`, HunyuanVideo): linspace(1, 1/N, N) by the static shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    fresh = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)  # never mutate the caller's
    terminal = fresh.config.get("shift_terminal")
    if terminal and steps < 2:  # diffusers' stretch of a one-sigma grid divides 0 by 0 (NaN timesteps)
        raise VidinvError(
            f"inversion.steps: {steps} step: the scheduler's sigmas are stretched to end at shift_terminal"
            f" {terminal} (LTX-Video's), which takes 2 or more steps"
        )
    if fresh.config.use_dynamic_shifting:
        if latent_hw is None and tokens is None:
            raise ValueError("a dynamically shifted flow grid needs the latent size")
        sigmas = torch.linspace(1.0, 1.0 / steps, steps).tolist()
        seq_len = image_seq_len(latent_hw) if tokens is None else tokens
        fresh.set_timesteps(sigmas=sigmas, mu=dynamic_shift(fresh.config, seq_len))
    elif linspace:  # HunyuanVideoPipeline's np.linspace(1, 0, N + 1)[:-1]
        fresh.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])
    else:
        fresh.set_timesteps(steps)
    return FlowTable(
        timesteps=fresh.timesteps.float().cpu(),
        sigmas=fresh.sigmas.float().cpu(),
        num_train_timesteps=fresh.config.num_train_timesteps,
    )


def flow_table_for(models, steps: int, latents: torch.Tensor | None = None) -> FlowTable:
    """The grid of a loaded flow model for latents (..., c, h, w): mu from the tokens its transformer
    sees (`Family.sequence_length`: a frame's, or a video model's whole latent clip)."""
    tokens = None
    if latents is not None:
        tokens = models.family.sequence_length(dict(models.transformer.config), tuple(latents.shape))
    latent_hw = None if latents is None else tuple(latents.shape[-2:])
    return flow_table(models.scheduler, steps, latent_hw, tokens=tokens, linspace=models.family.linspace_sigmas)


def euler_step(z: torch.Tensor, v: torch.Tensor, sigma_from: torch.Tensor, sigma_to: torch.Tensor) -> torch.Tensor:
    """z at sigma_from moved to sigma_to along the velocity v (diffusers' FlowMatchEulerDiscreteScheduler.step)."""
    return z + (sigma_to - sigma_from) * v


def at_step(model, i: int):
    """The model of step i: a FreeInv wrapper's transform of that step, else the model itself."""
    return model.at_step(i) if hasattr(model, "at_step") else model


@torch.no_grad()
def flow_invert(
    model,
    x0: torch.Tensor,
    table: FlowTable,
    *,
    progress=False,
    desc="flow inversion",
    done=None,
    on_step=None,
    out=None,
):
    """The Euler reversal of the grid from x0 (f c h w): latents (N+1, f c h w), latents[0] at sigma_0.

    `done` / `on_step` / `out`: resuming and the storage, as in `vidinv.inversion.ddim.invert_steps`.
    """

    def step(z, i):
        v = at_step(model, i)(z, table.inversion_timestep(i))
        return euler_step(z, v, level(table.sigmas, i + 1, z), level(table.sigmas, i, z))

    return invert_steps(step, x0, len(table), progress=progress, desc=desc, done=done, on_step=on_step, out=out)


class FlowSampler(Sampler):
    """Euler steps of a rectified-flow model on the record's sigma grid (module docstring)."""

    name = FLOW_SAMPLER
    deterministic = True

    def invert(self, model, x0, *, progress=False, desc="flow inversion", done=None, on_step=None, out=None, **inputs):
        done_latents = None if done is None else done["latents"]
        out_latents = None if out is None else out["latents"]
        latents = flow_invert(
            model, x0, self.table, progress=progress, desc=desc, done=done_latents, on_step=on_step, out=out_latents
        )
        return {"latents": latents}

    def step(self, z, pred, i):
        return euler_step(z, pred, level(self.table.sigmas, i, z), level(self.table.sigmas, i + 1, z))

    def inversion_latent(self, i):
        return self.record.latents[i + 1]  # inversion step i evaluated the model at the latent below


def record_sampler(method, scheduler) -> str:
    """The step rule of a record made by `method` on a model with `scheduler`: a flow rule of its own
    (flow, rf_solver, fireflow: a `FlowSampler`) on a flow-matching model, the flow Euler step for the
    methods built on the deterministic step (ddim, freeinv, mbdi); a one-line error for the other
    pairings."""
    from vidinv.registry import SAMPLERS

    flow, rule = is_flow_scheduler(scheduler), SAMPLERS.get(method.sampler)
    own_flow_rule = isinstance(rule, type) and issubclass(rule, FlowSampler)
    if flow and own_flow_rule:
        return method.sampler
    if flow and rule.deterministic:
        return FLOW_SAMPLER
    if flow:
        raise VidinvError(
            f"inversion.method: {method.name} cannot run on a flow-matching model (use flow, rf_solver, fireflow, freeinv or mbdi)"
        )
    if own_flow_rule:
        raise VidinvError(f"inversion.method: {method.name} needs a flow-matching model (SD3, Flux, Wan)")
    return method.sampler
