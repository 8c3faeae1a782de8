"""Flow inversion on tiny SD3 / Flux / Wan: parity with an independent Euler reversal, FreeInv / MBDI on
the flow grid, reconstruction from the record. Wan's latents are latent frames of its causal VAE; its
transformer sees the whole clip."""

from __future__ import annotations

import pytest
import torch

from vidinv.attention import install_from_config, remove_frame_attention
from vidinv.config import config_from_dict
from vidinv.inversion import invert, reconstruct
from vidinv.models import load_models


def flow_config(name: str, method: str = "flow", *, steps: int = 4, frame_attention: str = "none", **inversion):
    return config_from_dict(
        {
            "model": {"pretrained": name, "dtype": "fp32", "device": "cpu", "frame_attention": frame_attention},
            "inversion": {"method": method, "steps": steps, "source_prompt": "a red car", **inversion},
            "runtime": {"unet_chunk": 0},
        }
    )


@pytest.fixture(scope="module", params=["tiny-sd3", "tiny-flux", "tiny-wan", "tiny-ltx"])
def flow_models(request):
    return load_models(request.param, dtype="fp32", device="cpu")


def latents(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(frames, 16, 8, 8, generator=torch.Generator().manual_seed(seed))


def reference_flow_inversion(models, x0: torch.Tensor, prompt: str, guidance: float, steps: int) -> torch.Tensor:
    """The Euler reversal z <- z + (sigma_k - sigma_{k+1}) v(z, 1000 sigma_{k+1}) on each pipeline's grid,
    its velocity from the pipelines' own calls on the bare transformer (`tests.flow_reference`), for
    one image (Wan: one latent video x0 (f c h w))."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from tests.flow_reference import bare_velocity

    if models.family.name == "ltx":  # LTXPipeline's calls: tests/test_ltx.py
        from tests.test_ltx import reference_ltx_inversion

        return reference_ltx_inversion(models, x0, prompt, guidance, steps)
    pipe = models.pipeline
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    _, _, h, w = x0.shape
    if models.family.name == "flux":  # FluxPipeline's grid: sigmas linspace(1, 1/N, N) shifted by mu(image tokens)
        cfg = scheduler.config
        mu = calculate_shift(
            (h // 2) * (w // 2), cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift
        )
        scheduler.set_timesteps(sigmas=[1 - k / steps for k in range(steps)], mu=mu)
    else:
        scheduler.set_timesteps(steps)
    velocity, z, back = bare_velocity(models, x0, prompt, guidance)
    sigmas = scheduler.sigmas
    with torch.no_grad():
        for k in reversed(range(steps)):
            z = z + (sigmas[k] - sigmas[k + 1]) * velocity(z, 1000 * sigmas[k + 1])
    return back(z)


def test_flow_inversion_equals_an_independent_euler_reversal(flow_models):
    """One frame (Wan: a clip of 3 latent frames), frame_attention none: vidinv's record == the loop
    above (relative diff < 1e-4, fp32)."""
    config = flow_config(flow_models.source, guidance_scale=3.0)
    install_from_config(flow_models.transformer, config.model)
    try:
        x0 = latents(3 if flow_models.family.name == "wan" else 1)
        record = invert(flow_models, x0, config)
    finally:
        remove_frame_attention(flow_models.transformer)
    reference = reference_flow_inversion(flow_models, x0, "a red car", 3.0, 4)
    diff = (record.latents[0] - reference).norm() / reference.norm()
    assert diff < 1e-4, f"relative difference {diff:.2e}"
    assert record.sampler == "flow" and record.prediction_type == "flow"


@pytest.mark.parametrize("frame_attention", ["sparse_causal", "keyframe"])
def test_freeinv_without_transforms_is_flow_inversion_bit_for_bit(flow_models, frame_attention):
    x0 = latents(3, seed=1)
    runs = {}
    for method in ("flow", "freeinv"):
        config = flow_config(flow_models.source, method, frame_attention=frame_attention, transforms="none")
        install_from_config(flow_models.transformer, config.model)
        runs[method] = invert(flow_models, x0, config)
        runs[method + "_out"] = reconstruct(flow_models, runs[method], config)
    remove_frame_attention(flow_models.transformer)
    assert torch.equal(runs["flow"].latents, runs["freeinv"].latents)
    assert torch.equal(runs["flow_out"], runs["freeinv_out"])


def test_reconstruction_from_the_record_is_close_and_converges_with_steps(flow_models):
    """Flow inversion is not exact (the model is evaluated at the level below); its regeneration error
    shrinks with the step size. FreeInv / MBDI regenerate with the record's transforms (measured:
    docs/models.md, 'Flow models')."""
    x0 = latents(2, seed=2)
    errors = {}
    for method, steps in (("flow", 4), ("flow", 16), ("freeinv", 4), ("mbdi", 4)):
        config = flow_config(flow_models.source, method, steps=steps, frame_attention="sparse_causal")
        install_from_config(flow_models.transformer, config.model)
        record = invert(flow_models, x0, config)
        errors[method, steps] = float((reconstruct(flow_models, record, config) - x0).norm() / x0.norm())
    remove_frame_attention(flow_models.transformer)
    assert errors["flow", 16] < errors["flow", 4] / 2, errors
    assert max(errors.values()) < 0.2, errors
