"""The engine on the tiny SD-shaped model: parity with diffusers, exactness, FreeInv on video."""

from __future__ import annotations

import copy

import pytest
import torch

from vidinv import transforms as tf
from vidinv.config import config_from_dict
from vidinv.inversion import api
from vidinv.inversion.api import ReconstructionStats
from vidinv.inversion.ddim import ddim_invert
from vidinv.inversion.ddpm_ef import ddpm_ef_invert
from vidinv.inversion.denoiser import GuidedModel
from vidinv.inversion.freeinv import FreeInvEps
from vidinv.inversion.methods import ef_noise
from vidinv.inversion.samplers import DDIMSampler, EditFriendlyDDPMSampler
from vidinv.inversion.timesteps import step_table
from vidinv.models import encode_prompts


def clip_latents(frames=3, h=8, w=8, seed=0, dtype=torch.float32):
    return torch.randn(frames, 4, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def config(**inversion):
    return config_from_dict({"inversion": inversion})


def test_ddim_inversion_matches_diffusers_inverse_scheduler(tiny_models):
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    m, steps = tiny_models, 6
    x0 = clip_latents()
    emb = encode_prompts(m, ["a red bike"])
    eps = GuidedModel(m.unet, emb)
    table = step_table(m.scheduler, steps)
    ours = ddim_invert(eps, x0, table)
    assert eps.frame_calls == steps * len(x0)

    inverse = DDIMInverseScheduler.from_config(m.scheduler.config)
    inverse.set_timesteps(steps)
    z = x0.clone()
    context = emb.expand(len(x0), -1, -1)
    for t in inverse.timesteps:
        z = inverse.step(m.unet(z, t, encoder_hidden_states=context).sample, t, z).prev_sample
    assert (ours[0] - z).abs().max() < 1e-6

    sampler = DDIMScheduler.from_config(m.scheduler.config)
    sampler.set_timesteps(steps)
    x = z.clone()
    for t in sampler.timesteps:
        x = sampler.step(m.unet(x, t, encoder_hidden_states=context).sample, t, x).prev_sample
    assert (DDIMSampler(table).sample(eps, ours[0]) - x).abs().max() < 1e-6


def test_denoiser_guidance_and_chunking(tiny_models):
    m = tiny_models
    uncond, cond = encode_prompts(m, ["", "a bike"]).chunk(2)
    z, t = clip_latents(frames=4), torch.tensor(501)
    guided = GuidedModel(m.unet, torch.cat([uncond, cond]), 3.0)
    chunked = GuidedModel(m.unet, torch.cat([uncond, cond]), 3.0, chunk=3)
    e_u, e_c = GuidedModel(m.unet, uncond)(z, t), GuidedModel(m.unet, cond)(z, t)
    assert torch.allclose(guided(z, t), e_u + 3.0 * (e_c - e_u), atol=1e-5)
    assert torch.allclose(chunked(z, t), guided(z, t), atol=1e-5)
    assert guided.frame_calls == 2 * 2 * 4 and guided.rows == 2  # called twice


def test_freeinv_none_equals_ddim_bit_for_bit_on_the_unet(tiny_models):
    x0 = clip_latents(h=8, w=16)
    a = api.invert(tiny_models, x0, config(method="ddim", steps=5))
    b = api.invert(tiny_models, x0, config(method="freeinv", transforms="none", steps=5))
    assert b.transforms == ["id"] * 5
    assert torch.equal(a.latents, b.latents)


@pytest.mark.parametrize("transforms", ["rot90", "dihedral"])
def test_identical_frames_stay_identical_through_freeinv(tiny_models, transforms):
    frame = clip_latents(frames=1, seed=5)
    x0 = frame.expand(3, -1, -1, -1).clone()
    cfg = config(method="freeinv", transforms=transforms, steps=6, seed=2)
    record = api.invert(tiny_models, x0, cfg)
    assert len(set(record.transforms)) > 1  # the schedule does rotate
    for f in (1, 2):
        assert torch.equal(record.latents[:, f], record.latents[:, 0])
    out = api.reconstruct(tiny_models, record, cfg)
    assert torch.equal(out[1], out[0]) and torch.equal(out[2], out[0])


def test_freeinv_record_schedule_is_used_in_reconstruction(tiny_models):
    x0 = clip_latents()
    cfg = config(method="freeinv", transforms="rot90", steps=6, seed=1)
    record = api.invert(tiny_models, x0, cfg)
    eps, sampler, _ = api.record_model(tiny_models, record, cfg)
    table = sampler.table
    assert isinstance(eps, FreeInvEps) and eps.schedule == record.transforms
    expected = sampler.sample(eps, record.z_T)
    assert torch.equal(api.reconstruct(tiny_models, record, cfg), expected)
    other = FreeInvEps(eps.eps, table, tf.schedule(tf.GROUPS["rot90"], 6, seed=99))
    assert not torch.equal(sampler.sample(other, record.z_T), expected)


def test_non_square_freeinv_uses_shape_preserving_group(tiny_models):
    record = api.invert(tiny_models, clip_latents(h=8, w=16), config(method="freeinv", transforms="rot90", steps=8))
    assert set(record.transforms) <= set(tf.SHAPE_PRESERVING)
    assert record.group == list(tf.SHAPE_PRESERVING)


def test_mbdi_costs_group_size_calls_per_step(tiny_models):
    record = api.invert(tiny_models, clip_latents(frames=2), config(method="mbdi", transforms="flips", steps=3))
    assert record.stats.frame_calls == 4 * 3 * 2
    stats = ReconstructionStats()
    api.reconstruct(tiny_models, record, config(method="mbdi", transforms="flips", steps=3), stats=stats)
    assert stats.frame_calls == 4 * 3 * 2


@pytest.mark.parametrize("steps,skip", [(5, 0), (8, 3), (10, 7)])
def test_ddpm_ef_reconstruction_is_exact_fp32(tiny_models, steps, skip):
    x0 = clip_latents()
    cfg = config_from_dict(
        {"inversion": {"method": "ddpm_ef", "steps": steps, "source_prompt": "a bike"}, "edit": {"skip": skip}}
    )
    record = api.invert(tiny_models, x0, cfg)
    assert record.noise_maps.shape == (steps, 3, 4, 8, 8) and record.guidance_scale == 3.5
    assert record.noise_maps[-1].abs().max() > 0  # z_1 is kept
    stats = ReconstructionStats()
    out = api.reconstruct(tiny_models, record, cfg, stats=stats)
    assert stats.start_step == skip and stats.frame_calls == (steps - skip) * 3 * 2
    assert (out - x0).abs().max() < 1e-5


@pytest.mark.parametrize("steps,skip", [(6, 0), (10, 4)])
def test_ddpm_ef_reconstruction_is_exact_fp64(tiny_models, steps, skip):
    unet = copy.deepcopy(tiny_models.unet).double()
    uncond, cond = encode_prompts(tiny_models, ["", "a bike"]).double().chunk(2)
    eps = GuidedModel(unet, torch.cat([uncond, cond]), 3.5)
    table = step_table(tiny_models.scheduler, steps)
    x0 = clip_latents(dtype=torch.float64)
    noise = ef_noise(tuple(x0.shape), steps, seed=0, shared=False, dtype=torch.float64)
    latents, zs = ddpm_ef_invert(eps, x0, table, noise)
    out = EditFriendlyDDPMSampler(table, noise_maps=zs).sample(eps, latents[skip], start=skip)
    assert (out - x0).abs().max() < 1e-10


def test_ddpm_ef_noise_maps_match_diffusers_ledits(tiny_models):
    from diffusers import DDIMScheduler, LEditsPPPipelineStableDiffusion

    m, steps, prompt, seed = tiny_models, 6, "a bike", 3
    x0 = clip_latents(frames=2)
    scheduler = DDIMScheduler.from_config(m.scheduler.config)
    pipe = LEditsPPPipelineStableDiffusion(
        vae=m.vae,
        text_encoder=m.text_encoder,
        tokenizer=m.tokenizer,
        unet=copy.deepcopy(m.unet),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.encode_image = lambda *args, **kwargs: (x0.clone(), None)
    add_noise = scheduler.add_noise
    scheduler.add_noise = lambda x, n, t: add_noise(x, n, t.long())  # diffusers 0.42.1: float index
    pipe.invert(
        image=None,
        source_prompt=prompt,
        source_guidance_scale=3.5,
        num_inversion_steps=steps,
        skip=0.0,
        generator=torch.Generator().manual_seed(seed),
    )

    uncond, cond = encode_prompts(m, ["", prompt]).chunk(2)
    # diffusers 0.42.1's invert unpacks encode_prompt's (editing, negative) embeddings as (uncond, text), so
    # its guidance is eps_prompt + g (eps_empty - eps_prompt): the same denoiser with the roles swapped.
    eps = GuidedModel(m.unet, torch.cat([cond, uncond]), 3.5)
    table = step_table(m.scheduler, steps)
    noise = ef_noise(tuple(x0.shape), steps, seed=seed, shared=False, dtype=torch.float32)
    latents, zs = ddpm_ef_invert(eps, x0, table, noise)
    assert [int(t) for t in pipe.scheduler.timesteps] == table.to_list()
    assert (latents[0] - pipe.init_latents).abs().max() < 1e-6
    # the UNet runs (uncond, cond) as one batch here and as two calls there; /sigma_t amplifies the rounding
    scale = float(pipe.zs.abs().max())
    assert float((zs - pipe.zs).abs().max()) < 1e-5 * scale


def test_ddpm_ef_shared_noise_is_one_map_per_step():
    noise = ef_noise((3, 4, 8, 8), 5, seed=0, shared=True, dtype=torch.float32)
    assert noise.shape == (5, 1, 4, 8, 8)
    independent = ef_noise((3, 4, 8, 8), 5, seed=0, shared=False, dtype=torch.float32)
    assert independent.shape == (5, 3, 4, 8, 8) and not torch.equal(independent[:, 0], independent[:, 1])
