"""DDIM inversion equals diffusers' DDIMInverseScheduler loop (issue 13, items 1 and 3).

The reference is the loop diffusers' inverting pipelines run (Pix2PixZero's and DiffEdit's
`invert`): `DDIMInverseScheduler.from_config(scheduler.config)`, `set_timesteps(N)`, then for
every t: `unet(z, t, text)` and `inverse.step`. Text comes from the diffusers pipeline's own
`encode_prompt` (SDXL: `text_embeds` and `_get_add_time_ids`), the UNet keeps diffusers' own
attention processors. vidinv runs through `VideoEditor` with `model.frame_attention=none` on one
frame, guidance 1.

How the two line up: vidinv indexes in sampling order, step i at t_i moving between abar_prev[i] =
alphas_cumprod[t_i - T // N] (final_alpha_cumprod below 0) and abar_t[i] = alphas_cumprod[t_i];
DDIMInverseScheduler's step at the same t_i moves from alphas_cumprod[t_i - T // N]
(initial_alpha_cumprod below 0, which is final_alpha_cumprod: both are 1 with set_alpha_to_one,
else alphas_cumprod[0]) to alphas_cumprod[t_i], with the UNet called at t_i. The first inversion
step starts at abar_prev of the last sampling step, for every steps_offset and spacing.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from vidinv import VideoEditor
from vidinv.inversion.ddim import ddim_invert, ddim_sample
from vidinv.inversion.timesteps import step_table
from vidinv.models.tiny import SD_SCHEDULER_CONFIG

PROMPT = "a red bike"
STEPS = 4
FAMILIES = {"tiny": "tiny_models", "tiny-sd2": "sd2", "tiny-sdxl": "sdxl"}


def relative_max_difference(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


def diffusers_text(models, prompt: str, size: tuple[int, int]) -> tuple[torch.Tensor, dict | None]:
    """(encoder_hidden_states, added_cond_kwargs) of `prompt` as diffusers' pipeline builds them."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    components = {name: getattr(models, name) for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    if models.text_encoder_2 is None:
        pipe = StableDiffusionPipeline(
            **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
        return pipe.encode_prompt(prompt, "cpu", 1, False)[0], None
    pipe = StableDiffusionXLPipeline(**components, text_encoder_2=models.text_encoder_2, tokenizer_2=models.tokenizer_2)
    emb, _, pooled, _ = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    projection = pipe.text_encoder_2.config.projection_dim
    time_ids = pipe._get_add_time_ids(size, (0, 0), size, emb.dtype, text_encoder_projection_dim=projection)
    return emb, {"text_embeds": pooled, "time_ids": time_ids}


@torch.no_grad()
def diffusers_inversion(models, x0: torch.Tensor, prompt: str, steps: int):
    """(timesteps, trajectory (N+1, f c h w) from x0 up to z_T) of diffusers' inversion loop."""
    from diffusers import DDIMInverseScheduler

    inverse = DDIMInverseScheduler.from_config(models.scheduler.config)
    inverse.set_timesteps(steps)
    size = (x0.shape[-2] * 8, x0.shape[-1] * 8)
    emb, added = diffusers_text(models, prompt, size)
    trajectory = [x0]
    for t in inverse.timesteps:
        pred = models.unet(trajectory[-1], t, encoder_hidden_states=emb, added_cond_kwargs=added).sample
        trajectory.append(inverse.step(pred, t, trajectory[-1]).prev_sample)
    return inverse.timesteps, torch.stack(trajectory)


@pytest.mark.parametrize("name", FAMILIES)
def test_ddim_inversion_equals_diffusers_inverse_scheduler_loop(request, name):
    reference_models = request.getfixturevalue(FAMILIES[name])
    editor = VideoEditor.from_pretrained(
        name,
        model={"frame_attention": "none", "dtype": "fp32", "device": "cpu"},
        inversion={"method": "ddim", "steps": STEPS, "guidance_scale": 1, "source_prompt": PROMPT},
    )
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    record, _ = editor.invert_latents(x0)
    timesteps, trajectory = diffusers_inversion(reference_models, x0, PROMPT, STEPS)

    assert record.prediction_type == reference_models.scheduler.config.prediction_type
    assert record.timesteps == timesteps.flip(0).tolist()  # the same t's, in sampling order
    assert relative_max_difference(record.latents.flip(0), trajectory) < 1e-4  # every step, z_T included


def analytic_model(z: torch.Tensor, t) -> torch.Tensor:
    """A prediction nonlinear in z and t, the same for both loops (no UNet needed for the tables)."""
    return torch.tanh(z) * torch.cos(torch.as_tensor(t, dtype=z.dtype) / 300) + 0.1 * z


# sample prediction with set_alpha_to_one: the first inversion step starts at abar = 1, where eps
# = (z - x0) / sqrt(1 - abar) is undefined in both loops; left out.
SCHEDULER_CASES = [
    (prediction, alpha_to_one, offset, spacing)
    for prediction, alpha_to_one, offset, spacing in itertools.product(
        ("epsilon", "v_prediction", "sample"), (False, True), (0, 1), ("leading", "trailing")
    )
    if not (prediction == "sample" and alpha_to_one)
]


@pytest.mark.parametrize(("prediction", "alpha_to_one", "offset", "spacing"), SCHEDULER_CASES)
def test_step_tables_line_up_with_diffusers_for_every_scheduler_convention(prediction, alpha_to_one, offset, spacing):
    """Inversion = DDIMInverseScheduler and sampling = DDIMScheduler for set_alpha_to_one,
    steps_offset and timestep_spacing, with the first step included."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    config = SD_SCHEDULER_CONFIG | dict(
        prediction_type=prediction, set_alpha_to_one=alpha_to_one, steps_offset=offset, timestep_spacing=spacing
    )
    table = step_table(DDIMScheduler(**config), 7)
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = ddim_invert(analytic_model, x0, table, prediction_type=prediction)

    inverse = DDIMInverseScheduler(**config)
    inverse.set_timesteps(7)
    z = x0
    for t in inverse.timesteps:
        z = inverse.step(analytic_model(z, t), t, z).prev_sample
    assert table.to_list() == inverse.timesteps.flip(0).tolist()
    assert relative_max_difference(ours[0], z) < 1e-6

    sampler = DDIMScheduler(**config)
    sampler.set_timesteps(7)
    x = z
    for t in sampler.timesteps:
        x = sampler.step(analytic_model(x, t), t, x).prev_sample
    assert relative_max_difference(ddim_sample(analytic_model, z, table, prediction_type=prediction), x) < 1e-6
