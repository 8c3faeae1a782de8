"""Wan 2.1 (tiny, random weights) as a native video model: its 3D causal VAE streamed in chunks and
tiled, equal to diffusers' whole-clip calls; frame counts it cannot take refused in one line; FreeInv's
transform on every latent frame; FlowEdit and flow inversion through the jobs on the video latent.
(Parity of the flow inversion and FlowEdit's exact properties: the tiny-wan cases of
test_flow_inversion_models.py and test_flowedit.py.)"""

from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange

from vidinv.cli import main
from vidinv.config import config_from_dict
from vidinv.errors import VidinvError
from vidinv.inversion import invert
from vidinv.jobs.streaming import DecodedFrames
from vidinv.models import load_models
from vidinv.models.causal_vae import CausalDecoder, CausalEncoder, check_frame_count
from vidinv.models.tiny_flow import tiny_flow_pipeline
from vidinv.models.vae import decode_latents, encode_frames, set_vae_tiling

FRAMES, H, W = 9, 64, 96  # 9 frames = 3 latent frames of 8x12


@pytest.fixture(scope="module")
def wan():
    return load_models("tiny-wan", dtype="fp32", device="cpu")


@pytest.fixture
def vae(wan, request):
    """The tiny Wan VAE, tiled in 32-px tiles (several per frame) when the test's `tiled` is set."""
    set_vae_tiling(wan.vae, 32 if getattr(request, "param", False) else None)
    yield wan.vae
    set_vae_tiling(wan.vae, None)


def clip(frames: int = FRAMES, seed: int = 0) -> torch.Tensor:
    return torch.rand(frames, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def statistics(vae):
    mean = torch.tensor(vae.config.latents_mean)[:, None, None]
    return mean, torch.tensor(vae.config.latents_std)[:, None, None]


def diffusers_latents(vae, frames: torch.Tensor) -> torch.Tensor:
    """diffusers' whole-clip encode (its own tiling when enabled), normalised as WanPipeline does."""
    mean_z = vae.encode(rearrange(frames, "t c h w -> 1 c t h w")).latent_dist.mean
    mean, std = statistics(vae)
    return (rearrange(mean_z, "1 c t h w -> t c h w") - mean) / std


def diffusers_frames(vae, latents: torch.Tensor) -> torch.Tensor:
    mean, std = statistics(vae)
    return rearrange(vae.decode(rearrange(latents * std + mean, "t c h w -> 1 c t h w")).sample, "1 c t h w -> t c h w")


@pytest.mark.parametrize("vae", [False, True], indirect=True, ids=["whole", "tiled"])
@pytest.mark.parametrize("chunks", [[9], [1, 4, 4], [2, 3, 4], [8, 1]])
@torch.no_grad()
@pytest.mark.slow
def test_streamed_encode_in_any_chunks_equals_diffusers_whole_clip_encode(vae, chunks):
    """Each tile's causal cache is carried across pushes, so chunk borders change nothing (bit for bit)."""
    frames = clip()
    encoder = CausalEncoder(vae)
    streamed = torch.cat([encoder.push(part) for part in frames.split(chunks)])
    encoder.finish()
    assert streamed.shape == (3, 16, H // 8, W // 8)
    assert torch.equal(streamed, diffusers_latents(vae, frames))
    assert torch.equal(encode_frames(vae, frames, chunk=chunks[0]), streamed)


@pytest.mark.parametrize("vae", [False, True], indirect=True, ids=["whole", "tiled"])
@pytest.mark.parametrize("chunks", [[3], [1, 1, 1], [2, 1]])
@torch.no_grad()
@pytest.mark.slow
def test_streamed_decode_in_any_chunks_equals_diffusers_whole_clip_decode(vae, chunks):
    latents = torch.randn(3, 16, H // 8, W // 8, generator=torch.Generator().manual_seed(1))
    decoder = CausalDecoder(vae)
    streamed = torch.cat([decoder.push(part) for part in latents.split(chunks)])
    assert streamed.shape == (FRAMES, 3, H, W)
    assert torch.equal(streamed, diffusers_frames(vae, latents))
    assert torch.equal(decode_latents(vae, latents, chunk=chunks[0]), streamed)


@pytest.mark.parametrize("takes", [[8, 1], [4, 4, 1], [1, 8], [9]])
@pytest.mark.slow
def test_decoded_frames_are_taken_in_the_source_chunks(vae, takes):
    """The edit job writes the decoded clip beside the source's chunks: any chunking gives the frames in order."""
    latents = torch.randn(3, 16, H // 8, W // 8, generator=torch.Generator().manual_seed(2))
    decoded = DecodedFrames(vae, latents)
    assert torch.equal(torch.cat([decoded.take(n) for n in takes]), decode_latents(vae, latents))


def test_frame_counts_the_causal_vae_cannot_take_are_one_line_errors_naming_the_nearest(vae):
    for frames in (1, 5, 9, 29):
        check_frame_count(frames, 4)
    with pytest.raises(VidinvError, match=r"8 frames cannot be encoded.*nearest: 5 or 9") as err:
        check_frame_count(8, 4)
    assert "\n" not in str(err.value)
    encoder = CausalEncoder(vae)
    encoder.push(clip(frames=6))
    with pytest.raises(VidinvError, match=r"the clip: 6 frames cannot be encoded.*nearest: 5 or 9"):
        encoder.finish()


def test_cli_refuses_a_frame_count_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["edit", "configs/wan_edit.yaml", "model.pretrained=tiny-wan", "video.num_frames=16",
            "video.height=64", "video.width=64", f"runtime.output_dir={out}"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "vidinv: error: video.num_frames: 16 frames cannot be encoded: the causal video VAE takes 1 + a multiple"
        " of 4 frames (nearest: 13 or 17)"
    )
    assert not out.exists()


@torch.no_grad()
def test_freeinv_shows_the_transformer_every_latent_frame_in_the_steps_orientation(wan):
    """One transform per step for the whole clip: the latent video the transformer sees is the
    step's transform applied to the spatial axes of every latent frame."""
    from vidinv import transforms as tf

    config = config_from_dict(
        {
            "model": {"pretrained": "tiny-wan", "frame_attention": "none", "device": "cpu"},
            "inversion": {"method": "freeinv", "steps": 6, "transforms": "rot90", "seed": 3, "guidance_scale": 1.0},
        }
    )
    x0 = torch.randn(3, 16, 8, 8, generator=torch.Generator().manual_seed(4))
    seen = []
    hook = wan.transformer.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["hidden_states"].clone()), with_kwargs=True
    )
    try:
        record = invert(wan, x0, config)
    finally:
        hook.remove()
    assert len(seen) == 6 and len(set(record.transforms)) > 1
    for i, video in zip(reversed(range(6)), seen):  # inversion runs from x0 (step N-1) to z_T (step 0)
        z = record.latents[i + 1]  # inversion step i evaluates the model at the latent below
        expected = rearrange(tf.apply(record.transforms[i], z), "f c h w -> 1 c f h w")
        assert torch.equal(video, expected), (i, record.transforms[i])


def test_frame_methods_are_refused_on_wan_in_one_line(wan):
    from vidinv import VideoEditor

    for method in ("pnp", "tokenflow", "fatezero"):
        editor = VideoEditor({"edit": {"method": method}, "model": {"device": "cpu"}}, models=wan)
        with pytest.raises(VidinvError, match=f"edit.method: {method} runs on frame models.*use flowedit"):
            editor.edit_latents(torch.zeros(3, 16, 8, 8), "a blue bus")


def run_args(out, *more):
    return ["--quiet", "model.pretrained=tiny-wan", "video.num_frames=9", "video.height=64", "video.width=64",
            "inversion.steps=4", "edit.flowedit.n_max=3", f"runtime.output_dir={out}", *more]  # fmt: skip


def test_edit_job_writes_every_frame_and_counts_latent_frame_calls(tmp_path, capsys):
    from vidinv.io import read_video
    from vidinv.planning import plan_run

    out = tmp_path / "run"
    quiet, *args = run_args(out)
    assert main([quiet, "edit", "configs/wan_edit.yaml", *args]) == 0
    assert "edited 9 frames 64x64" in capsys.readouterr().out
    for name in ("edited.mp4", "source.mp4", "side_by_side.mp4"):
        assert read_video(out / name).frames.shape[0] == 9, name
    metrics = json.loads((out / "metrics.json").read_text())
    predicted = plan_run(config_from_dict(json.loads(json.dumps(_resolved(out)))), "edit").frame_calls
    # 3 latent frames x 3 edited steps x (source + target branch) x 2 CFG rows
    assert metrics["frames"] == 9 and metrics["frame_calls"] == {"inversion": 0, "edit": 3 * 3 * 2 * 2} == predicted


def _resolved(out):
    import yaml

    return yaml.safe_load((out / "config.yaml").read_text())


def test_reconstruct_job_inverts_the_video_latent(tmp_path, capsys):
    out = tmp_path / "run"
    quiet, *args = run_args(out, "inversion.method=flow")
    assert main([quiet, "reconstruct", "configs/wan_edit.yaml", *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 9 and metrics["latent_shape"] == [3, 16, 8, 8]
    assert metrics["frame_calls"] == {"inversion": 3 * 4, "reconstruction": 3 * 4}  # guidance 1: one row
    assert len(metrics["psnr_db_per_frame"]) == 9


def test_a_folder_with_wans_unipc_flow_scheduler_loads_with_euler_on_its_shift(tmp_path, capsys):
    """Wan's pipelines ship UniPC with flow sigmas: vidinv steps the same shifted grid with Euler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    pipe = tiny_flow_pipeline("tiny-wan")
    pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipe.save_pretrained(tmp_path / "wan")
    models = load_models(str(tmp_path / "wan"), dtype="fp32", device="cpu")
    assert type(models.scheduler) is FlowMatchEulerDiscreteScheduler and models.scheduler.config.shift == 5.0
    assert models.family.name == "wan" and models.video
    reference = pipe.transformer.state_dict()
    assert all(torch.equal(t, reference[k]) for k, t in models.transformer.state_dict().items())
    assert main(["info", str(tmp_path / "wan")]) == 0
    report = capsys.readouterr().out
    assert "Euler steps on UniPCMultistepScheduler's flow grid" in report and "shift            5.0" in report
    assert "edit methods     flowedit" in report


def test_wan_in_half_precision_keeps_the_modules_diffusers_keeps_in_fp32():
    """Cast to bf16 as diffusers' from_pretrained loads it: the transformer's
    `_keep_in_fp32_modules` (rope, time embedder, scale-shift tables, norms) stay fp32, the rest bf16."""
    from vidinv.models import load_models

    transformer = load_models("tiny-wan", dtype="bf16", device="cpu").transformer
    keep = transformer._keep_in_fp32_modules
    dtypes = {name: p.dtype for name, p in transformer.named_parameters()}
    kept = {name for name in dtypes if any(part in keep for part in name.split("."))}
    assert kept and all(dtypes[name] == torch.float32 for name in kept)
    assert {dtypes[name] for name in set(dtypes) - kept} == {torch.bfloat16}
