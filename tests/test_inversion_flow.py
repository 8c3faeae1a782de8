"""The flow-matching Euler sampler over analytic velocity fields (no transformer)."""

from __future__ import annotations

import pytest
import torch

from vidinv import transforms as tf
from vidinv.errors import VidinvError
from vidinv.inversion.flow import FlowSampler, flow_invert, flow_table, record_sampler
from vidinv.inversion.freeinv import FreeInvEps, GroupMeanEps
from vidinv.inversion.methods import get_inversion_method


@pytest.fixture(scope="module")
def sd3_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0)


@pytest.fixture(scope="module")
def flux_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)


def pointwise_velocity(z, t):
    """A velocity field acting on each latent pixel alone (so every transform commutes with it)."""
    s = torch.as_tensor(t, dtype=z.dtype) / 1000
    return 0.3 * s * z - 0.1 * torch.tanh(z)


def test_flow_grid_is_the_schedulers_with_its_shift(sd3_scheduler):
    from diffusers import FlowMatchEulerDiscreteScheduler

    table = flow_table(sd3_scheduler, 5)
    reference = FlowMatchEulerDiscreteScheduler.from_config(sd3_scheduler.config)
    reference.set_timesteps(5)
    assert torch.equal(table.timesteps, reference.timesteps) and torch.equal(table.sigmas, reference.sigmas)
    assert table.sigmas[0] == 1 and table.sigmas[-1] == 0 and table.sigmas[2] > 2 / 5  # shifted towards noise
    assert sd3_scheduler.timesteps is None or len(sd3_scheduler.timesteps) != 5  # the caller's is not touched


def test_dynamic_shift_grid_is_fluxs_pipeline_grid(flux_scheduler):
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    table = flow_table(flux_scheduler, 4, (16, 24))
    reference = FlowMatchEulerDiscreteScheduler.from_config(flux_scheduler.config)
    mu = calculate_shift(8 * 12, 256, 4096, 0.5, 1.15)
    reference.set_timesteps(sigmas=[1.0, 0.75, 0.5, 0.25], mu=mu)
    assert torch.equal(table.timesteps, reference.timesteps) and torch.equal(table.sigmas, reference.sigmas)
    with pytest.raises(ValueError, match="latent size"):
        flow_table(flux_scheduler, 4)


def test_sampling_matches_diffusers_euler_steps_bit_for_bit(sd3_scheduler):
    from diffusers import FlowMatchEulerDiscreteScheduler

    table = flow_table(sd3_scheduler, 6)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = FlowSampler(table).sample(pointwise_velocity, z)
    reference = FlowMatchEulerDiscreteScheduler.from_config(sd3_scheduler.config)
    reference.set_timesteps(6)
    x = z.clone()
    for t in reference.timesteps:
        x = reference.step(pointwise_velocity(x, t), t, x).prev_sample
    assert torch.equal(ours, x)


def test_inversion_step_is_the_euler_reversal_at_the_level_below(sd3_scheduler):
    table = flow_table(sd3_scheduler, 4)
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    seen = []

    def velocity(z, t):
        seen.append(float(t))
        return pointwise_velocity(z, t)

    latents = flow_invert(velocity, x0, table)
    s = table.sigmas
    assert seen == [float(1000 * s[i]) for i in (4, 3, 2, 1)]  # 1000 sigma_{k+1}, from the clean end up
    for k in range(4):
        z = latents[k + 1]
        assert torch.equal(latents[k], z + (s[k] - s[k + 1]) * pointwise_velocity(z, 1000 * s[k + 1]))
    assert torch.equal(latents[-1], x0)


def test_straight_flows_are_inverted_and_regenerated_exactly(sd3_scheduler):
    """A constant velocity field is a straight path: Euler is exact both ways."""
    table = flow_table(sd3_scheduler, 5)
    c = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x0 = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    latents = flow_invert(lambda z, t: c, x0, table)
    assert torch.allclose(latents[0], x0 + c, atol=1e-12)  # sigma goes 0 -> 1
    assert torch.allclose(FlowSampler(table).sample(lambda z, t: c, latents[0]), x0, atol=1e-12)


def test_freeinv_with_the_identity_schedule_is_flow_inversion_bit_for_bit(sd3_scheduler):
    table = flow_table(sd3_scheduler, 4)
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    plain = flow_invert(pointwise_velocity, x0, table)
    assert torch.equal(flow_invert(FreeInvEps(pointwise_velocity, table, ["id"] * 4), x0, table), plain)


def test_freeinv_transform_of_step_i_is_used_at_inversion_step_i(sd3_scheduler):
    """The inversion's timestep is the next step's: the transform must follow the step index."""
    table = flow_table(sd3_scheduler, 3)
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    schedule = ["rot90", "hflip", "rot270"]
    used = []

    def velocity(z, t):
        used.append(z)
        return pointwise_velocity(z, t)

    latents = flow_invert(FreeInvEps(velocity, table, schedule), x0, table)
    for n, i in enumerate((2, 1, 0)):
        assert torch.equal(used[n], tf.apply(schedule[i], latents[i + 1]))
    # a pointwise field commutes with every transform: the same trajectory as without them
    assert torch.allclose(latents, flow_invert(pointwise_velocity, x0, table), atol=1e-6)
    group = GroupMeanEps(pointwise_velocity, tf.group_for("rot90", 8, 8))
    assert torch.allclose(flow_invert(group, x0, table), latents, atol=1e-6)


def test_step_rule_follows_the_models_scheduler(sd3_scheduler):
    from diffusers import DDIMScheduler

    method = {name: get_inversion_method(name) for name in ("flow", "freeinv", "mbdi", "ddim", "ddpm_ef")}
    assert [record_sampler(method[n], sd3_scheduler) for n in ("flow", "freeinv", "mbdi")] == ["flow"] * 3
    with pytest.raises(VidinvError, match="ddpm_ef cannot run on a flow-matching model"):
        record_sampler(method["ddpm_ef"], sd3_scheduler)
    with pytest.raises(VidinvError, match="flow needs a flow-matching model"):
        record_sampler(method["flow"], DDIMScheduler())
    assert record_sampler(method["freeinv"], DDIMScheduler()) == "ddim"
