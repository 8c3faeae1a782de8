"""Wan 2.2 (tiny, random weights) in its two published layouts: TI2V-5B (a patchified 48-channel VAE,
16x in space, and per-token timesteps) and A14B (two experts switched at WanPipeline's boundary
timestep). Its VAE streamed in chunks and tiled equals diffusers' whole-clip calls; inversion equals a
loop written from WanPipeline's own calls; FreeInv and FlowEdit keep their exact properties; folders
are told apart from Wan 2.1 by their model_index.json; the jobs count the frame-calls they plan."""

from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange

from tests.inversion_properties import assert_freeinv_without_transforms_is_flow, transformer_inputs
from tests.test_wan import diffusers_frames, diffusers_latents
from vidinv.cli import main
from vidinv.config import config_from_dict
from vidinv.editor import VideoEditor
from vidinv.inversion import invert
from vidinv.models import load_models
from vidinv.models.causal_vae import CausalDecoder, CausalEncoder
from vidinv.models.flow import flow_family_of
from vidinv.models.tiny_flow import tiny_flow_pipeline
from vidinv.models.vae import decode_latents, encode_frames, set_vae_tiling

TI2V, A14B = "tiny-wan22", "tiny-wan22-a14b"


@pytest.fixture(scope="module", params=[TI2V, A14B])
def wan22(request):
    return load_models(request.param, dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def ti2v():
    return load_models(TI2V, dtype="fp32", device="cpu")


def config_for(models, method: str = "flow", *, steps: int = 4, **inversion):
    return config_from_dict(
        {
            "model": {"pretrained": models.source, "dtype": "fp32", "device": "cpu", "frame_attention": "none"},
            "inversion": {"method": method, "steps": steps, "source_prompt": "a red car", **inversion},
        }
    )


def latent_clip(models, frames: int = 3, seed: int = 0) -> torch.Tensor:
    channels = models.transformer.config.in_channels
    return torch.randn(frames, channels, 4, 4, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("tile", [None, 32], ids=["whole", "tiled"])
@pytest.mark.parametrize("chunks", [[1, 4, 4], [2, 3, 4]])
@torch.no_grad()
def test_patchified_vae_streamed_in_any_chunks_equals_diffusers_whole_clip_calls(ti2v, tile, chunks):
    """TI2V-5B's VAE packs 2x2 pixels into channels before its causal encoder (and back after the
    decoder): streamed group by group, tiled or not, it gives diffusers' latents and frames bit for bit."""
    vae = ti2v.vae
    frames = torch.rand(9, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    set_vae_tiling(vae, tile)
    try:
        encoder = CausalEncoder(vae)
        streamed = torch.cat([encoder.push(part) for part in frames.split(chunks)])
        encoder.finish()
        assert streamed.shape == (3, 48, 64 // 16, 96 // 16)
        assert torch.equal(streamed, diffusers_latents(vae, frames))
        decoder = CausalDecoder(vae)
        decoded = torch.cat([decoder.push(part) for part in streamed.split([1, 2])])
        assert decoded.shape == frames.shape
        assert torch.equal(decoded, diffusers_frames(vae, streamed))
        assert torch.equal(encode_frames(vae, frames, chunk=chunks[0]), streamed)
        assert torch.equal(decode_latents(vae, streamed, chunk=1), decoded)
    finally:
        set_vae_tiling(vae, None)


def reference_inversion(models, x0: torch.Tensor, prompt: str, guidance: float, steps: int) -> torch.Tensor:
    """The Euler reversal z <- z + (sigma_k - sigma_{k+1}) v(z, 1000 sigma_{k+1}) written from
    WanPipeline's denoising loop on the bare transformers: the expert by its boundary rule, the
    timestep per token from its mask when `expand_timesteps`, CFG over a cond and an uncond pass."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = models.pipeline
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    embeds, negative = pipe.encode_prompt(prompt, "", max_sequence_length=models.max_sequence_length)
    ratio = pipe.config.boundary_ratio
    boundary = None if ratio is None else ratio * scheduler.config.num_train_timesteps
    z = rearrange(x0, "f c h w -> 1 c f h w")

    def velocity(z, t):
        model = pipe.transformer if boundary is None or t >= boundary else pipe.transformer_2
        if pipe.config.expand_timesteps:
            mask = torch.ones(1, 1, *z.shape[2:])
            timestep = (mask[0][0][:, ::2, ::2] * t).flatten().unsqueeze(0)
        else:
            timestep = t.expand(1)
        cond = model(hidden_states=z, timestep=timestep, encoder_hidden_states=embeds).sample
        uncond = model(hidden_states=z, timestep=timestep, encoder_hidden_states=negative).sample
        return uncond + guidance * (cond - uncond)

    sigmas = scheduler.sigmas
    with torch.no_grad():
        for k in reversed(range(steps)):
            z = z + (sigmas[k] - sigmas[k + 1]) * velocity(z, 1000 * sigmas[k + 1])
    return rearrange(z, "1 c f h w -> f c h w")


def test_flow_inversion_equals_wanpipelines_own_calls(wan22):
    x0 = latent_clip(wan22)
    record = invert(wan22, x0, config_for(wan22, guidance_scale=3.0))
    reference = reference_inversion(wan22, x0, "a red car", 3.0, 4)
    diff = (record.latents[0] - reference).norm() / reference.norm()
    assert diff < 1e-4, f"relative difference {diff:.2e}"


def experts(models) -> list:
    """The pipeline's transformers: the high-noise one, and A14B's low-noise `transformer_2`."""
    return [m for m in (models.pipeline.transformer, getattr(models.pipeline, "transformer_2", None)) if m is not None]


@torch.no_grad()
def test_a14b_runs_the_low_noise_expert_exactly_below_the_boundary_timestep():
    models = load_models(A14B, dtype="fp32", device="cpu")
    boundary = models.boundary_timestep
    assert boundary == 875.0
    with transformer_inputs(*experts(models)) as seen:
        invert(models, latent_clip(models), config_for(models, steps=6))
    assert {k for k, _ in seen} == {0, 1}, "both experts run on a 6-step shift-12 grid"
    for k, inputs in seen:
        t = float(inputs["timestep"][0])
        assert (t >= boundary) == (k == 0), (k, t)


@torch.no_grad()
def test_ti2v_gives_the_transformer_one_timestep_per_token(ti2v):
    with transformer_inputs(*experts(ti2v)) as seen:
        invert(ti2v, latent_clip(ti2v), config_for(ti2v, steps=2))
    for _, inputs in seen:
        t, video = inputs["timestep"], inputs["hidden_states"]
        _, _, f, h, w = video.shape
        assert t.shape == (1, f * (h // 2) * (w // 2)) and t.dtype == torch.float32
        assert torch.equal(t, torch.full_like(t, float(t[0, 0])))


@torch.no_grad()
def test_freeinv_transforms_every_latent_frame_for_every_expert(wan22):
    """One transform per step: every expert sees the step's transform on every latent frame, and
    FreeInv without transforms is flow inversion bit for bit."""
    from vidinv import transforms as tf

    x0 = latent_clip(wan22, seed=1)
    with transformer_inputs(*experts(wan22)) as seen:
        record = invert(wan22, x0, config_for(wan22, "freeinv", steps=6, transforms="rot90", seed=3))
    assert len(seen) == 6 and len(set(record.transforms)) > 1
    for i, (_, inputs) in zip(reversed(range(6)), seen):
        expected = rearrange(tf.apply(record.transforms[i], record.latents[i + 1]), "f c h w -> 1 c f h w")
        assert torch.equal(inputs["hidden_states"], expected), (i, record.transforms[i])
    config_of = lambda method: config_for(wan22, method, transforms="none")  # noqa: E731
    assert_freeinv_without_transforms_is_flow(wan22, x0, config_of)


def test_flowedit_with_the_source_prompt_as_target_returns_the_source_exactly(wan22):
    x_src = latent_clip(wan22, seed=2)
    config = {
        "model": {"pretrained": wan22.source, "dtype": "fp32", "device": "cpu", "frame_attention": "none"},
        "inversion": {"method": "freeinv", "steps": 6, "source_prompt": "a red car"},
        "edit": {"method": "flowedit", "flowedit": {"source_guidance": 3.0, "target_guidance": 3.0}},
    }
    out = VideoEditor(config, models=wan22).edit_latents(x_src, "a red car")
    assert torch.equal(out.latents, x_src)
    edited = VideoEditor(config, models=wan22).edit_latents(x_src, "a blue bus")
    assert not torch.equal(edited.latents, x_src) and torch.isfinite(edited.latents).all()


@pytest.mark.slow
def test_saved_folders_are_told_apart_from_wan_21_by_their_model_index(tmp_path):
    for name, family in ((TI2V, "wan22"), (A14B, "wan22"), ("tiny-wan", "wan")):
        folder = tmp_path / name
        tiny_flow_pipeline(name).save_pretrained(folder)
        assert flow_family_of(str(folder)) == family, name
    loaded = load_models(str(tmp_path / A14B), dtype="fp32", device="cpu")
    builtin = load_models(A14B, dtype="fp32", device="cpu")
    assert loaded.family.name == "wan22" and loaded.boundary_timestep == builtin.boundary_timestep
    loaded.max_sequence_length = builtin.max_sequence_length  # a folder reads Wan's 512 T5 tokens, tiny 32
    x0 = latent_clip(builtin)
    config = config_for(builtin)
    # the same weights (checked) give velocities within ~5e-7: the loaded modules' kernels differ in the last bits
    for name in ("transformer", "transformer_2"):
        saved, built = getattr(loaded.pipeline, name).state_dict(), getattr(builtin.pipeline, name).state_dict()
        assert saved.keys() == built.keys() and all(torch.equal(saved[k], built[k]) for k in built)
    torch.testing.assert_close(
        invert(loaded, x0, config).latents, invert(builtin, x0, config).latents, rtol=0, atol=1e-5
    )


def test_edit_job_on_the_tiny_config_counts_the_frame_calls_it_plans(tmp_path, capsys):
    from vidinv.io import read_video
    from vidinv.planning import plan_run

    out = tmp_path / "run"
    args = ["--quiet", "edit", "configs/tiny/wan22_edit.yaml", f"runtime.output_dir={out}"]
    assert main(args) == 0
    config = config_from_dict(json.loads(json.dumps(_resolved(out))))
    metrics = json.loads((out / "metrics.json").read_text())
    assert read_video(out / "edited.mp4").frames.shape[0] == config.video.num_frames == metrics["frames"]
    assert metrics["frame_calls"] == plan_run(config, "edit").frame_calls


def test_sizes_off_the_token_grid_are_one_line_errors_before_loading(tmp_path, capsys):
    """TI2V-5B: 16 px a latent pixel and 2x2 latent pixels a token: sides are multiples of 32."""
    out = tmp_path / "run"
    assert main(["--quiet", "edit", "configs/tiny/wan22_edit.yaml", "video.height=48", f"runtime.output_dir={out}"])
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidinv: error: video.height: 48 is not a multiple of 32") and "\n" not in err
    assert not out.exists()


def _resolved(out):
    import yaml

    return yaml.safe_load((out / "config.yaml").read_text())


def test_windows_run_on_both_layouts_and_one_covering_the_clip_changes_nothing(wan22):
    """Temporal windows call the expert of each timestep on every window (per-token timesteps of the
    window's own tokens): one window over the clip equals the unwindowed run bit for bit; windows of 3
    latent frames overlapping by 1 over 5 latent frames spend each window's frame-calls."""

    def run(window):
        config = config_from_dict(
            {
                "model": {"pretrained": wan22.source, "dtype": "fp32", "device": "cpu", "frame_attention": "none"},
                "inversion": {"method": "freeinv", "steps": 3, "source_prompt": "a red car", "guidance_scale": 2.0},
                "edit": {"method": "flowedit", "target_prompt": "a blue bus"},
                "runtime": {"window": window, "window_overlap": 1},
            }
        )
        return VideoEditor(config, models=wan22).edit_latents(latent_clip(wan22, frames=5, seed=5), "a blue bus")

    whole, single, windowed = run(0), run(5), run(3)
    assert torch.equal(single.latents, whole.latents)
    assert windowed.stats.frame_calls == whole.stats.frame_calls * 6 // 5  # windows of 3 + 3 latent frames
    assert torch.isfinite(windowed.latents).all() and not torch.equal(windowed.latents, whole.latents)
