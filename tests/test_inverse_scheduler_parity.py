"""vidinv's DDIM inversion and reconstruction equal diffusers' DDIMInverseScheduler / DDIMScheduler
loops for every UNet family: epsilon (SD 1.x), v-prediction (SD 2.x) and SDXL's added
conditioning, with one frame, no cross-frame attention and guidance 1 (issue 13, item 1)."""

from __future__ import annotations

import pytest
import torch

from vidinv.attention import remove_frame_attention
from vidinv.config import config_from_dict
from vidinv.inversion import api
from vidinv.models import encode_text, load_models

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
