"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov, Michaeli, CVPR 2024, arXiv 2304.06140).

DDPM sampling (eta = 1) is x_{t-1} = mu_t(x_t) + sigma_t z_t. Inversion:

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) n_t,  n_t ~ N(0, I) drawn independently per t   # eq. (6)
    for t = T..1:  z_t = (x_{t-1} - mu_t(x_t)) / sigma_t                                        # eq. (5)
                   x_{t-1} = mu_t(x_t) + sigma_t z_t      (the official correction: no float drift)

with DDIM's eq. (12) at eta = 1 for mu_t and sigma_t (diffusers' DDIMScheduler.step/_get_variance):

    sigma_t^2 = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)                      # DDIM eq. (16)
    x0_hat    = (x_t - sqrt(1 - abar_t) e) / sqrt(abar_t)
    mu_t      = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma_t^2) e

Every noise map is kept (z_1 included), so sampling with the same x_T, z's, prompt and guidance
reproduces x_0 to machine precision. The ops follow diffusers' LEDITS++ `compute_noise_ddim`.
A step with sigma_t = 0 (the last one when the final level is 1, `set_alpha_to_one`, or equals
abar_t, t = 0 with `steps_offset` 0) has no noise to carry x_{t-1}: its map is the residual
x_{t-1} - mu_t itself (scale 1 in place of sigma_t), where LEDITS++ would divide by zero.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from vidinv.inversion.prediction import to_eps, to_x0
from vidinv.inversion.resume import steps_done
from vidinv.inversion.storage import place, read, trajectory_storage
from vidinv.inversion.timesteps import StepTable, level, work_dtype


def add_noise(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) n (diffusers' add_noise, eq. 6)."""
    return abar**0.5 * x0 + (1 - abar) ** 0.5 * noise


def sigma_t(abar_t: torch.Tensor, abar_prev: torch.Tensor) -> torch.Tensor:
    """DDPM's posterior std (DDIM eq. 16 at eta = 1)."""
    variance = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
    return variance**0.5


def mu_t(x: torch.Tensor, e: torch.Tensor, abar_t: torch.Tensor, abar_prev: torch.Tensor, sigma: torch.Tensor):
    """The mean of x_{t-1} given x_t and the predicted noise e (DDIM eq. 12 with sigma_t)."""
    x0_hat = (x - (1 - abar_t) ** 0.5 * e) / abar_t**0.5
    return abar_prev**0.5 * x0_hat + (1 - abar_prev - sigma**2) ** 0.5 * e


def predicted_mu(x, pred, table: StepTable, i: int, levels, prediction_type: str) -> torch.Tensor:
    """mu_t of step i from the model's prediction at x; at zero SNR (abar_t = 0: a zero-terminal-SNR
    grid's first step, CogVideoX's) x0 from the prediction itself (`to_x0`), sigma_t^2 = 1 - abar_prev."""
    a_t, a_prev, sigma, _ = levels
    e = to_eps(pred, x, a_t, prediction_type)
    if table.abar_t[i] > 0:
        return mu_t(x, e, a_t, a_prev, sigma)
    return a_prev**0.5 * to_x0(pred, x, a_t, prediction_type) + (1 - a_prev - sigma**2).clamp(min=0) ** 0.5 * e


def map_scale(sigma: torch.Tensor) -> torch.Tensor:
    """The factor of step i's noise map: sigma_t, or 1 where sigma_t = 0 (the map is then the residual)."""
    return sigma if sigma > 0 else torch.ones_like(sigma)


def _levels(table: StepTable, i: int, like: torch.Tensor):
    """(abar_t, abar_prev, sigma_t, the map's scale) of step i, as 0-d tensors like `like`.

    Computed where the table lives (the host) in `like`'s dtype, then moved: `map_scale` branches on
    sigma_t, and a branch on a device tensor would wait for the device at every step."""
    a_t, a_prev = table.abar_t[i].to(like.dtype), table.abar_prev[i].to(like.dtype)
    sigma = sigma_t(a_t, a_prev)
    return tuple(x.to(like.device) for x in (a_t, a_prev, sigma, map_scale(sigma)))


@torch.no_grad()
def ddpm_ef_invert(
    model,
    x0: torch.Tensor,
    table: StepTable,
    noise,
    *,
    prediction_type: str = "epsilon",
    progress: bool = False,
    desc: str = "ddpm-ef inversion",
    done: dict | None = None,
    on_step=None,
    out: dict | None = None,
):
    """Noise maps of x0 (f c h w) for per-step noise n (N, f or 1, c, h, w; a tensor, or anything
    that gives step i's noise as n[i]), indexed like the table.

    Returns (latents (N+1, f c h w), zs (N, f c h w)): latents[i] is x at timesteps[i] (after the
    correction), latents[N] is x0; zs[i] is the noise map step i adds. The noisy latent x_{t-1} of
    eq. (6) is drawn when step i reads it, so only the step's latents are held; `out`
    ({"latents", "noise_maps"}: `vidinv.inversion.step_file.StepFile`s) receives the steps in
    place of tensors in memory. Resuming: `done` = {"latents": latents[:k+1], "zs": zs[:k]} of an
    interrupted run (k steps done; views of `out` itself when it is on disk); `on_step(state)` is
    called after every step with a thunk giving that state.
    """
    n = len(table)
    if len(noise) != n:
        raise ValueError(f"{len(noise)} noise tensors for {n} steps")
    x0 = x0.to(work_dtype(x0.dtype)).contiguous()  # one memory layout: a checkpoint's (see vidinv.inversion.ddim)

    def noisy(i: int) -> torch.Tensor:  # x_t of eq. (6) at step i; x0 itself below the last step
        if i == n:
            return x0
        return add_noise(x0, noise[i].to(device=x0.device, dtype=x0.dtype), level(table.abar_t, i, x0))

    latents, zs = trajectory_storage(out, {"latents": n + 1, "noise_maps": n}, x0)
    latents[n] = x0
    k = steps_done(done)
    if k:
        place(latents, done["latents"][: k + 1], 0)
        place(zs, done["zs"], 0)
        x = read(latents, k, x0)
    else:
        x = noisy(0)
        latents[0] = x
    for i in tqdm(range(k, n), total=n, initial=k, desc=desc, disable=not progress, leave=False):
        levels = _levels(table, i, x)
        mu, scale = predicted_mu(x, model(x, table.timesteps[i]), table, i, levels, prediction_type), levels[3]
        z = (noisy(i + 1) - mu) / scale
        zs[i] = z
        if i + 1 < n:  # the correction; x0 itself is kept as given
            x = mu + scale * z
            latents[i + 1] = x
        if on_step is not None:
            on_step(lambda i=i: {"latents": latents[: i + 2], "zs": zs[: i + 1]})
    return latents, zs


def ddpm_ef_sample_step(
    x: torch.Tensor, pred: torch.Tensor, table: StepTable, i: int, zs: torch.Tensor, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """Sampling step i: x_{t-1} = mu_t(x_t) + sigma_t z_t with the stored noise map zs[i]
    (`EditFriendlyDDPMSampler.step`; the loop is `Sampler.sample`)."""
    levels = _levels(table, i, x)
    mu = predicted_mu(x, pred, table, i, levels, prediction_type)
    return mu + levels[3] * zs[i].to(device=x.device, dtype=x.dtype)
