"""Timesteps and cumulative-alpha tables taken from a diffusers scheduler, in its own conventions.

Everything is indexed in *sampling order* (the order of `scheduler.timesteps`: t descending), so
step i of an inversion, of a reconstruction and of an edit all mean the same timestep.

For step i at timestep t_i (diffusers' DDIMScheduler.step / DDIMInverseScheduler.step):

    abar_t[i]    = alphas_cumprod[t_i]
    abar_prev[i] = alphas_cumprod[t_i - T // N]   if t_i - T // N >= 0 else final_alpha_cumprod

The values are the scheduler's own float32 alphas_cumprod entries (no table is re-derived here),
so the loops match diffusers bit for bit in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepTable:
    """The discretisation of one run: N timesteps (descending) and their abar levels."""

    timesteps: torch.Tensor  # (N,) int64, descending (sampling order)
    abar_t: torch.Tensor  # (N,) float32: noise level of the latent that step i denoises
    abar_prev: torch.Tensor  # (N,) float32: noise level step i denoises to
    num_train_timesteps: int

    def __len__(self) -> int:
        return len(self.timesteps)

    def t(self, i: int) -> int:
        return int(self.timesteps[i])

    def index_of(self, t) -> int:
        """The step index of timestep t (a bijection within one table)."""
        matches = (self.timesteps == int(t)).nonzero()
        if len(matches) != 1:
            raise KeyError(f"timestep {int(t)} is not in this table")
        return int(matches[0, 0])

    def to_list(self) -> list[int]:
        return [int(t) for t in self.timesteps]


def sampling_scheduler(scheduler):
    """A fresh DDIMScheduler with `scheduler`'s config (set_timesteps never mutates the caller's); a
    fresh one of the scheduler's own class when its alphas are its own (CogVideoX's DDIM / DPM
    schedulers: the SNR shifted by `snr_shift_scale` before the zero-terminal-SNR rescale)."""
    from diffusers import DDIMScheduler

    cls = type(scheduler) if "snr_shift_scale" in scheduler.config else DDIMScheduler
    return cls.from_config(scheduler.config)


def step_table(scheduler, steps: int) -> StepTable:
    """The table of an N-step DDIM discretisation of `scheduler` (any diffusers scheduler config)."""
    ddim = sampling_scheduler(scheduler)
    ddim.set_timesteps(steps)
    train = ddim.config.num_train_timesteps
    ratio = train // ddim.num_inference_steps
    ac = ddim.alphas_cumprod  # float32, the scheduler's own table
    timesteps = ddim.timesteps.to(torch.int64).cpu()
    abar_t = torch.stack([ac[int(t)] for t in timesteps])
    abar_prev = torch.stack(
        [ac[int(t) - ratio] if int(t) - ratio >= 0 else ddim.final_alpha_cumprod for t in timesteps]
    )
    return StepTable(timesteps=timesteps, abar_t=abar_t.float(), abar_prev=abar_prev.float(), num_train_timesteps=train)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the loops carry the latent in: float64 stays float64, everything else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def level(abar: torch.Tensor, i: int, like: torch.Tensor) -> torch.Tensor:
    """abar entry i as a 0-d tensor on `like`'s device and dtype (scalar ops stay in that dtype)."""
    return abar[i].to(device=like.device, dtype=like.dtype)
