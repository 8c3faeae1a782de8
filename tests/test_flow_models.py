"""Tiny SD3 (without T5) and Flux: built, saved as diffusers folders, detected and loaded back."""

from __future__ import annotations

import pytest
import torch

from vidinv.models import decode_latents, encode_frames, load_models
from vidinv.models.flow import PipelineModels, flow_condition, flow_family_of
from vidinv.models.tiny_flow import tiny_flow_pipeline

FAMILIES = {"tiny-sd3": "sd3", "tiny-flux": "flux"}


@pytest.fixture(scope="module", params=list(FAMILIES))
def saved(request, tmp_path_factory):
    """(name, folder) of a tiny flow model written with the pipeline's save_pretrained."""
    folder = tmp_path_factory.mktemp(request.param)
    tiny_flow_pipeline(request.param).save_pretrained(folder)
    return request.param, folder


def test_flow_families_are_detected_from_model_index_only(saved, tmp_path):
    name, folder = saved
    assert flow_family_of(name) == FAMILIES[name]
    assert flow_family_of(str(folder)) == FAMILIES[name]
    load_models("tiny", dtype="fp32", device="cpu").save_pretrained(tmp_path / "sd")
    assert flow_family_of(str(tmp_path / "sd")) is None  # SD folders stay with the SD loader
    assert flow_family_of("tiny") is None


def test_a_saved_flow_folder_loads_back_with_the_same_weights_and_conditions(saved):
    name, folder = saved
    built = load_models(name, dtype="fp32", device="cpu")
    loaded = load_models(str(folder), dtype="fp32", device="cpu")
    assert isinstance(loaded, PipelineModels) and loaded.family.name == FAMILIES[name]
    assert loaded.prediction_type == "flow" and loaded.denoiser is loaded.transformer
    assert not any(p.requires_grad for p in loaded.transformer.parameters())
    for a, b in zip(built.transformer.state_dict().values(), loaded.transformer.state_dict().values()):
        assert torch.equal(a, b)
    if name == "tiny-sd3":
        assert loaded.pipeline.text_encoder_3 is None  # SD3 without T5: the T5 rows are zeros
    loaded.max_sequence_length = built.max_sequence_length
    a, b = flow_condition(built, ["a cat", ""], 2.0), flow_condition(loaded, ["a cat", ""], 2.0)
    assert torch.equal(a.embeds, b.embeds) and torch.equal(a.pooled, b.pooled)
    assert a.embeds.shape[:2] == (2, 77 * (name == "tiny-sd3") + built.max_sequence_length)


def test_flow_vae_latents_are_shifted_and_scaled_as_diffusers_does():
    models = load_models("tiny-sd3", dtype="fp32", device="cpu")
    vae = models.vae
    frames = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = encode_frames(vae, frames)
    expected = (vae.encode(frames).latent_dist.mean - vae.config.shift_factor) * vae.config.scaling_factor
    assert latents.shape == (2, 16, 4, 4) and torch.equal(latents, expected)
    decoded = decode_latents(vae, latents)
    reference = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor).sample.clamp(-1, 1)
    assert torch.equal(decoded, reference)


def test_sd3_gets_its_timestep_in_fp32_in_half_precision():
    """As SD3's pipeline does: the transformer receives the timestep in fp32 whatever the model's
    dtype (cast to fp16, the 50-step shift-3 grid's timesteps were off by up to 0.23)."""
    from vidinv.models import load_models
    from vidinv.models.flow import flow_condition

    models = load_models("tiny-sd3", dtype="fp16", device="cpu")
    seen = []
    models.transformer.register_forward_pre_hook(lambda m, a, k: seen.append(k["timestep"]), with_kwargs=True)
    t = 999.7305  # a timestep fp16 cannot hold (it rounds to 999.5)
    cond = flow_condition(models, ["a bike"])
    models.call(models.transformer, torch.zeros(1, 16, 4, 4, dtype=torch.float16), t, cond)
    assert seen[0].dtype == torch.float32 and seen[0].item() == torch.tensor(t).item()
