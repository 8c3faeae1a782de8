"""DDIM inversion and sampling (eta = 0) over a model callable m(z, t) and a StepTable.

Song et al. 2021 (arXiv 2010.02502), eq. (12) with sigma_t = 0. One step moves a latent from the
level abar_from to abar_to with the noise predicted at the step's timestep:

    x0_hat = (z - sqrt(1 - abar_from) * e) / sqrt(abar_from)          # "predicted x_0", eq. (12)
    z'     = sqrt(abar_to) * x0_hat + sqrt(1 - abar_to) * e            # eq. (12), direction to x_t

Sampling runs it from abar_t[i] down to abar_prev[i] with e = eps(z_t, t_i) (DDIMScheduler.step);
inversion runs it from abar_prev[i] up to abar_t[i] with e = eps(z_{t-1}, t_i), the UNet evaluated
at t_i on the current latent (DDIMInverseScheduler.step). Same ops in the same order as diffusers.
The model's prediction is turned into eps at the level of the latent it saw (`prediction.to_eps`).

The inversions carry their latents contiguous whatever layout x0 comes in (the VAE's latents are
channels-last strided): the UNet's convolutions round differently per memory layout, and a resumed
run starts from a checkpoint's contiguous tensors, so only one layout gives the same bits.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from vidinv.inversion.prediction import to_eps, to_x0
from vidinv.inversion.storage import place, read, trajectory_storage
from vidinv.inversion.timesteps import StepTable, level, work_dtype


def ddim_step(z: torch.Tensor, e: torch.Tensor, abar_from: torch.Tensor, abar_to: torch.Tensor) -> torch.Tensor:
    """Move z from noise level abar_from to abar_to along the predicted noise e (eq. 12, eta = 0)."""
    x0_hat = (z - (1 - abar_from) ** 0.5 * e) / abar_from**0.5
    return abar_to**0.5 * x0_hat + (1 - abar_to) ** 0.5 * e


def invert_steps(
    step,
    x0: torch.Tensor,
    n: int,
    *,
    progress: bool = False,
    desc: str = "inversion",
    done=None,
    on_step=None,
    out=None,
):
    """The trajectory of a deterministic inversion: latents (N+1, f c h w), latents[i] at step i.

    `step(z, i)` moves the latent of step i + 1 up to step i's level (sampling order: latents[0] is
    the noisiest, latents[N] is x0 itself). The trajectory is written into its storage step by
    step: a tensor, or `out` (a `vidinv.inversion.step_file.StepFile`: the record on disk).
    Resuming: `done` holds the tail latents[N-k..N] of an interrupted run (k steps done; a view of
    `out` itself when it is on disk), and `on_step(state)` is called after every step with a thunk
    giving that tail ({"latents": ...}).
    """
    z = x0.to(work_dtype(x0.dtype)).contiguous()  # one memory layout: a checkpoint's (module docstring)
    (latents,) = trajectory_storage(None if out is None else {"latents": out}, {"latents": n + 1}, z)
    latents[n] = z
    done_steps = 0 if done is None else len(done) - 1
    if done_steps:
        place(latents, done, n - done_steps)
        z = read(latents, n - done_steps, z)
    steps = reversed(range(n - done_steps))
    for i in tqdm(steps, total=n, initial=done_steps, desc=desc, disable=not progress, leave=False):
        z = step(z, i)
        latents[i] = z
        if on_step is not None:
            on_step(lambda i=i: {"latents": latents[i:]})
    return latents


@torch.no_grad()
def ddim_invert(
    model,
    x0: torch.Tensor,
    table: StepTable,
    *,
    prediction_type: str = "epsilon",
    progress: bool = False,
    desc: str = "ddim inversion",
    done=None,
    on_step=None,
    out=None,
):
    """The DDIM inversion trajectory of x0 (f c h w): latents (N+1, f c h w), latents[i] at timesteps[i].

    latents[0] is z_T, latents[N] is x0 itself; sampling step i starts from latents[i].
    `done` / `on_step` / `out`: resuming and the storage, as in `invert_steps`.
    """

    def step(z, i):
        abar_from = level(table.abar_prev, i, z)
        e = to_eps(model(z, table.timesteps[i]), z, abar_from, prediction_type)
        return ddim_step(z, e, abar_from, level(table.abar_t, i, z))

    return invert_steps(step, x0, len(table), progress=progress, desc=desc, done=done, on_step=on_step, out=out)


def ddim_sample_step(z: torch.Tensor, pred: torch.Tensor, table: StepTable, i: int, prediction_type: str = "epsilon"):
    """Sampling step i: z at timesteps[i] -> the level below, given the model's prediction at z
    (`DDIMSampler.step`; the loop is `Sampler.sample`)."""
    abar_from, abar_to = level(table.abar_t, i, z), level(table.abar_prev, i, z)
    e = to_eps(pred, z, abar_from, prediction_type)
    if table.abar_t[i] > 0:
        return ddim_step(z, e, abar_from, abar_to)
    # zero SNR (a zero-terminal-SNR grid's first step): x0 from the prediction itself, eq. (12) as before
    return abar_to**0.5 * to_x0(pred, z, abar_from, prediction_type) + (1 - abar_to) ** 0.5 * e
