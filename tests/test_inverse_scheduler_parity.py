"""vidinv's DDIM inversion and reconstruction equal diffusers' DDIMInverseScheduler / DDIMScheduler
loops for every UNet family: epsilon (SD 1.x), v-prediction (SD 2.x) and SDXL's added
conditioning, with one frame, no cross-frame attention and guidance 1 (issue 13, item 1)."""

from __future__ import annotations

import itertools

import pytest
import torch

from vidinv.attention import remove_frame_attention
from vidinv.config import config_from_dict
from vidinv.inversion import api
from vidinv.inversion.ddim import ddim_invert
from vidinv.inversion.samplers import DDIMSampler
from vidinv.inversion.timesteps import step_table
from vidinv.models import encode_text, load_models
from vidinv.models.tiny import SD_SCHEDULER_CONFIG

STEPS, PROMPT = 5, "a red bike"


@pytest.fixture(scope="module", params=["tiny", "tiny-sd2", "tiny-sdxl"])
def family_models(request):
    models = load_models(request.param, dtype="fp32", device="cpu")
    remove_frame_attention(models.unet)  # the model's own attention (frame_attention: none)
    return models


def one_frame(models) -> torch.Tensor:
    channels = models.unet.config.in_channels
    return torch.randn(1, channels, 8, 8, generator=torch.Generator().manual_seed(3))


def reference_unet(models, x0):
    """eps / v of diffusers' UNet for the prompt, called as the pipelines call it (SDXL: added_cond_kwargs)."""
    text = encode_text(models, [PROMPT], size=api.text_size(models, x0))
    return lambda z, t: models.unet(z, t, encoder_hidden_states=text.emb, added_cond_kwargs=text.added).sample


def relative_max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@torch.no_grad()
def test_ddim_inversion_and_reconstruction_equal_diffusers_loops(family_models):
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    models, x0 = family_models, one_frame(family_models)
    config = config_from_dict(
        {
            "model": {"frame_attention": "none"},
            "inversion": {"method": "ddim", "steps": STEPS, "source_prompt": PROMPT, "guidance_scale": 1.0},
        }
    )
    record = api.invert(models, x0, config)
    assert models.scheduler.config.prediction_type == models.family.prediction_type

    unet = reference_unet(models, x0)
    inverse = DDIMInverseScheduler.from_config(models.scheduler.config)
    inverse.set_timesteps(STEPS)
    z = x0.clone()
    for t in inverse.timesteps:
        z = inverse.step(unet(z, t), t, z).prev_sample
    assert relative_max_difference(record.latents[0], z) < 1e-4

    sampler = DDIMScheduler.from_config(models.scheduler.config)
    sampler.set_timesteps(STEPS)
    x = record.latents[0].clone()
    for t in sampler.timesteps:
        x = sampler.step(unet(x, t), t, x).prev_sample
    assert relative_max_difference(api.reconstruct(models, record, config), x) < 1e-4


@pytest.mark.parametrize(
    ("name", "prediction_type"),
    [("tiny-sd2", "auto"), ("tiny-sdxl", "auto"), ("tiny", "v_prediction"), ("tiny", "sample")],
)
def test_ddpm_ef_reconstructs_exactly_for_every_prediction_type(name, prediction_type):
    """Edit-friendly DDPM stays exact whatever the UNet predicts: its noise maps absorb the step."""
    models = load_models(name, dtype="fp32", device="cpu", prediction_type=prediction_type)
    assert prediction_type == "auto" or models.family.prediction_type == prediction_type
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    config = config_from_dict(
        {"inversion": {"method": "ddpm_ef", "steps": STEPS, "source_prompt": PROMPT}, "edit": {"skip": 0}}
    )
    record = api.invert(models, x0, config)
    assert (api.reconstruct(models, record, config) - x0).abs().max() < 1e-5


def analytic_model(z: torch.Tensor, t) -> torch.Tensor:
    """A prediction nonlinear in z and t, the same for both loops (no UNet needed for the tables)."""
    return torch.tanh(z) * torch.cos(torch.as_tensor(t, dtype=z.dtype) / 300) + 0.1 * z


# sample prediction with set_alpha_to_one: the first inversion step starts at abar = 1, where eps
# = (z - sqrt(abar) x0) / sqrt(1 - abar) is undefined in both loops; left out.
SCHEDULER_CASES = [
    (prediction, alpha_to_one, offset, spacing)
    for prediction, alpha_to_one, offset, spacing in itertools.product(
        ("epsilon", "v_prediction", "sample"), (False, True), (0, 1), ("leading", "trailing")
    )
    if not (prediction == "sample" and alpha_to_one)
]


@pytest.mark.parametrize(("prediction", "alpha_to_one", "offset", "spacing"), SCHEDULER_CASES)
def test_step_tables_line_up_with_diffusers_for_every_scheduler_convention(prediction, alpha_to_one, offset, spacing):
    """Inversion = DDIMInverseScheduler and sampling = DDIMScheduler (same timesteps, first and last
    step included) whatever set_alpha_to_one, steps_offset and timestep_spacing say: vidinv's step i
    at t_i moves between alphas_cumprod[t_i - T // N] (final_alpha_cumprod below 0) and
    alphas_cumprod[t_i], as DDIMInverseScheduler.step does with its initial_alpha_cumprod."""
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
    ddim = DDIMSampler(table, prediction_type=prediction)
    assert relative_max_difference(ddim.sample(analytic_model, z), x) < 1e-6
