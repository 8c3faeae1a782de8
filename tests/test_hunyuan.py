"""HunyuanVideo (tiny, random weights) as a native video model: flow inversion equal to an Euler
reversal written from HunyuanVideoPipeline's own calls (its sigma grid, encode_prompt with the
template, the transformer with the text mask, pooled CLIP and guidance x 1000); FreeInv's transform
on every latent frame; FlowEdit's identity edit; its whole-clip VAE equal to diffusers' calls; frame
counts and sizes it cannot take refused in one line; the jobs through the command line counting the
frame-calls `vidinv plan` predicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from einops import rearrange

from tests.test_bench_scripts import load_script, run_script  # noqa: F401 (fixtures)
from vidinv.cli import main
from vidinv.config import config_from_dict
from vidinv.inversion import invert, reconstruct
from vidinv.models import load_models
from vidinv.models.tiny_configs import TINY_HUNYUAN_TEMPLATE

PROMPT, GUIDANCE = "a red car", 6.0
TINY_CONFIG = "configs/tiny/hunyuan_edit.yaml"


@pytest.fixture(scope="module")
def hunyuan():
    return load_models("tiny-hunyuan", dtype="fp32", device="cpu")


def latents(frames: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(frames, 16, 8, 8, generator=torch.Generator().manual_seed(seed))


def inversion_config(method: str = "flow", steps: int = 4, **inversion):
    return config_from_dict(
        {
            "model": {"pretrained": "tiny-hunyuan", "dtype": "fp32", "device": "cpu", "frame_attention": "none"},
            "inversion": {"method": method, "steps": steps, "source_prompt": PROMPT, "guidance_scale": GUIDANCE}
            | inversion,
        }
    )


def reference_inversion(models, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """z <- z + (sigma_k - sigma_{k+1}) v(z, 1000 sigma_{k+1}) on the bare transformer, each piece as
    HunyuanVideoPipeline.__call__ makes it: sigmas np.linspace(1, 0, N + 1)[:-1] through its scheduler,
    `encode_prompt` with the template, guidance tensor([g]) x 1000, the clip as (1 c f h w)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import retrieve_timesteps

    pipe, transformer = models.pipeline, models.transformer
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    retrieve_timesteps(scheduler, steps, "cpu", sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])
    embeds, pooled, mask = pipe.encode_prompt(
        PROMPT, prompt_template=TINY_HUNYUAN_TEMPLATE, max_sequence_length=models.max_sequence_length
    )
    guidance = torch.tensor([GUIDANCE], dtype=transformer.dtype) * 1000.0
    z, sigmas = x0.permute(1, 0, 2, 3)[None], scheduler.sigmas
    with torch.no_grad():
        for k in reversed(range(steps)):
            v = transformer(
                hidden_states=z,
                timestep=(1000 * sigmas[k + 1]).expand(1),
                encoder_hidden_states=embeds,
                encoder_attention_mask=mask,
                pooled_projections=pooled,
                guidance=guidance,
            ).sample
            z = z + (sigmas[k] - sigmas[k + 1]) * v
    return z[0].permute(1, 0, 2, 3)


def test_flow_inversion_equals_an_euler_reversal_of_the_pipelines_own_calls(hunyuan):
    """A clip of 3 latent frames, fp32: relative difference < 1e-4 (measured: 0, bit for bit)."""
    x0 = latents()
    record = invert(hunyuan, x0, inversion_config())
    reference = reference_inversion(hunyuan, x0, 4)
    diff = float((record.latents[0] - reference).norm() / reference.norm())
    assert diff < 1e-4, f"relative difference {diff:.2e}"
    assert record.sampler == "flow" and record.prediction_type == "flow"


@torch.no_grad()
def test_regeneration_from_the_record_is_the_pipelines_own_denoising_loop(hunyuan):
    """Reconstructing from the inverted noise equals HunyuanVideoPipeline.__call__ from the same
    latents (its sigmas, scheduler steps, embedded guidance), bit for bit in fp32."""
    config = inversion_config()
    record = invert(hunyuan, latents(seed=2), config)
    ours = reconstruct(hunyuan, record, config)
    pipe = hunyuan.pipeline
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        prompt=PROMPT,
        height=64,
        width=64,
        num_frames=9,
        num_inference_steps=4,
        guidance_scale=GUIDANCE,
        latents=rearrange(record.latents[0], "f c h w -> 1 c f h w").clone(),
        output_type="latent",
        prompt_template=TINY_HUNYUAN_TEMPLATE,
        max_sequence_length=hunyuan.max_sequence_length,
    ).frames
    assert torch.equal(ours, rearrange(theirs, "1 c f h w -> f c h w"))


def test_the_prompt_rows_are_the_pipelines_encode_prompt_with_the_template_of_the_tokenizer(hunyuan):
    """One row a prompt, the embedded guidance its scale; the tiny tokenizer gets the tiny template (its
    crop drops <|startoftext|> and "video:", so the mask starts on the prompt), a tokenizer with
    LLaMA-3's header token the pipeline's own."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    from vidinv.models.flow import flow_condition
    from vidinv.models.flow_adapters import hunyuan_template
    from vidinv.models.tiny import build_tiny_tokenizer

    pipe = hunyuan.pipeline
    cond = flow_condition(hunyuan, [PROMPT, ""], guidance=GUIDANCE)
    embeds, pooled, mask = pipe.encode_prompt(
        [PROMPT, ""], prompt_template=TINY_HUNYUAN_TEMPLATE, max_sequence_length=hunyuan.max_sequence_length
    )
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.pooled, pooled) and torch.equal(cond.mask, mask)
    assert cond.guidance.tolist() == [GUIDANCE, GUIDANCE]
    prompt_tokens = len(pipe.tokenizer(PROMPT).input_ids) - 1  # the prompt's and <|endoftext|>, no start
    assert mask[0].tolist() == [1] * prompt_tokens + [0] * (hunyuan.max_sequence_length - prompt_tokens)
    llama3 = build_tiny_tokenizer()
    llama3.add_tokens(["<|start_header_id|>"], special_tokens=True)
    assert hunyuan_template(llama3) is DEFAULT_PROMPT_TEMPLATE


def test_freeinv_without_transforms_is_flow_inversion_bit_for_bit(hunyuan):
    from tests.inversion_properties import assert_freeinv_without_transforms_is_flow

    config_of = lambda method: inversion_config(method, transforms="none")  # noqa: E731
    assert_freeinv_without_transforms_is_flow(hunyuan, latents(seed=1), config_of)


@torch.no_grad()
def test_freeinv_shows_the_transformer_every_latent_frame_in_the_steps_orientation(hunyuan):
    """One transform per step for the whole clip: the latent video the transformer sees is the step's
    transform applied to the spatial axes of every latent frame."""
    from vidinv import transforms as tf

    x0 = latents(seed=4)
    seen = []
    hook = hunyuan.transformer.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["hidden_states"].clone()), with_kwargs=True
    )
    try:
        record = invert(hunyuan, x0, inversion_config("freeinv", steps=6, transforms="rot90", seed=3))
    finally:
        hook.remove()
    assert len(seen) == 6 and len(set(record.transforms)) > 1
    for i, video in zip(reversed(range(6)), seen):  # inversion runs from x0 (step N-1) to z_T (step 0)
        expected = rearrange(tf.apply(record.transforms[i], record.latents[i + 1]), "f c h w -> 1 c f h w")
        assert torch.equal(video, expected), (i, record.transforms[i])


@pytest.mark.parametrize("method", ["flow", "freeinv"])
def test_flowedit_with_the_source_prompt_as_target_returns_the_source_exactly(hunyuan, method):
    """Equal prompts and embedded guidance: v_tar - v_src is zero on every step (FreeInv's transforms
    included), so FlowEdit leaves x_src as it is."""
    from vidinv import VideoEditor

    config = {
        "model": {"pretrained": "tiny-hunyuan", "dtype": "fp32", "device": "cpu", "frame_attention": "none"},
        "inversion": {"method": method, "steps": 6, "source_prompt": PROMPT},
        "edit": {"method": "flowedit", "flowedit": {"source_guidance": GUIDANCE, "target_guidance": GUIDANCE}},
    }
    x_src = latents(seed=5)
    out = VideoEditor(config, models=hunyuan).edit_latents(x_src, PROMPT)
    assert torch.equal(out.latents, x_src)
    assert out.stats.frame_calls == 4 * 2 * 3  # n_max 33/50 of 6 steps, two branches of one row, 3 latent frames


def one_line_refusal(capsys, tmp_path, *overrides) -> str:
    out = tmp_path / "run"
    assert main(["edit", TINY_CONFIG, f"runtime.output_dir={out}", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not out.exists(), err
    return err


def test_frame_counts_and_sizes_it_cannot_take_are_one_line_errors_before_loading(capsys, tmp_path, monkeypatch):
    import vidinv.models.loading as loading

    monkeypatch.setattr(loading, "load_models", lambda *a, **k: pytest.fail("loaded"))
    err = one_line_refusal(capsys, tmp_path, "video.num_frames=6")
    assert "video.num_frames: 6 frames cannot be encoded" in err and "1 + a multiple of 4" in err
    assert "(nearest: 5 or 9)" in err
    err = one_line_refusal(capsys, tmp_path, "video.width=120")
    assert "video.width: 120 is not a multiple of 16" in err and "use 112 or 128" in err


def diffusers_latents(vae, frames: torch.Tensor) -> torch.Tensor:
    """diffusers' whole-clip encode (its own tiling when enabled), scaled as HunyuanVideo's latents are."""
    mean = vae.encode(rearrange(frames, "t c h w -> 1 c t h w")).latent_dist.mean
    return rearrange(mean, "1 c t h w -> t c h w") * vae.config.scaling_factor


def diffusers_frames(vae, latents: torch.Tensor) -> torch.Tensor:
    """HunyuanVideoPipeline's decode: latents / scaling_factor through `vae.decode`."""
    z = rearrange(latents, "t c h w -> 1 c t h w") / vae.config.scaling_factor
    return rearrange(vae.decode(z).sample, "1 c t h w -> t c h w").clamp(-1, 1)


@pytest.mark.parametrize("tile", [None, 32], ids=["whole", "tiled"])
@torch.no_grad()
def test_the_clip_vae_equals_diffusers_whole_clip_calls_scaled_as_the_pipeline_does(hunyuan, tile):
    """vidinv's encode / decode in chunks of any size (`runtime.vae_chunk`) are diffusers' one call over
    the clip, with its own tiling at the same tile when tiled (several 32-px tiles a frame)."""
    from vidinv.models.vae import decode_latents, encode_frames, set_vae_tiling

    vae = hunyuan.vae
    frames = torch.rand(9, 3, 64, 96, generator=torch.Generator().manual_seed(6)) * 2 - 1
    z = torch.randn(3, 16, 8, 12, generator=torch.Generator().manual_seed(7))
    encoded = encode_frames(vae, frames, chunk=4, tile_size=tile)
    decoded = decode_latents(vae, z, chunk=1, tile_size=tile)
    assert encoded.shape == (3, 16, 8, 12) and decoded.shape == (9, 3, 64, 96)
    set_vae_tiling(vae, tile)
    try:
        assert vae.use_tiling == (tile is not None)
        assert torch.equal(encoded, diffusers_latents(vae, frames))
        assert torch.equal(decoded, diffusers_frames(vae, z))
    finally:
        set_vae_tiling(vae, None)


def run_args(out, *more):
    return ["--quiet", f"runtime.output_dir={out}", "video.num_frames=9", "video.height=64", "video.width=64", *more]


def resolved_plan(out, command: str):
    import yaml

    from vidinv.planning import plan_run

    return plan_run(config_from_dict(yaml.safe_load((out / "config.yaml").read_text())), command)


def test_edit_job_writes_every_frame_and_counts_the_planned_frame_calls(tmp_path, capsys):
    from vidinv.io import read_video

    out = tmp_path / "run"
    quiet, *args = run_args(out)
    assert main([quiet, "edit", TINY_CONFIG, *args]) == 0
    assert "edited 9 frames 64x64" in capsys.readouterr().out
    for name in ("edited.mp4", "source.mp4", "side_by_side.mp4"):
        assert read_video(out / name).frames.shape[0] == 9, name
    metrics = json.loads((out / "metrics.json").read_text())
    # 3 latent frames x 3 edited steps x (source + target branch), one row each (embedded guidance)
    assert metrics["frame_calls"] == {"inversion": 0, "edit": 3 * 3 * 2} == resolved_plan(out, "edit").frame_calls


def test_reconstruct_job_inverts_the_video_latent_counting_the_planned_frame_calls(tmp_path):
    out = tmp_path / "run"
    quiet, *args = run_args(out, "inversion.method=flow")
    assert main([quiet, "reconstruct", TINY_CONFIG, *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 9 and metrics["latent_shape"] == [3, 16, 8, 8]
    assert metrics["frame_calls"] == {"inversion": 3 * 4, "reconstruction": 3 * 4}  # embedded guidance: one row
    assert metrics["frame_calls"] == resolved_plan(out, "reconstruct").frame_calls
    assert len(metrics["psnr_db_per_frame"]) == 9


def test_a_saved_folder_loads_as_hunyuan_with_the_same_weights_and_reports_its_family(tmp_path, capsys):
    from vidinv.models.tiny_flow import tiny_flow_pipeline

    pipe = tiny_flow_pipeline("tiny-hunyuan")
    pipe.save_pretrained(tmp_path / "hunyuan")
    models = load_models(str(tmp_path / "hunyuan"), dtype="fp32", device="cpu")
    assert models.family.name == "hunyuan" and models.video and models.family.guidance_embedded
    reference = pipe.transformer.state_dict()
    assert all(torch.equal(t, reference[k]) for k, t in models.transformer.state_dict().items())
    assert main(["info", str(tmp_path / "hunyuan")]) == 0
    report = capsys.readouterr().out
    assert "HunyuanVideoPipeline" in report and "shift            7.0" in report
    assert "text encoders    LlamaModel, CLIPTextModel" in report and "1 + a multiple of 4" in report
    assert main(["info", "tiny-hunyuan"]) == 0  # from its configs as data, nothing built
    assert capsys.readouterr().out.splitlines()[1:] == report.splitlines()[1:]  # all but the source row


def test_a_cached_hub_id_is_recognised_offline_from_its_model_index(tmp_path):
    """The hub probe as for the other families: a hub id in the cache, the hub unreachable: `vidinv
    info` reads its model_index.json (HunyuanVideoPipeline) and configs, one note, no weights."""
    from tests.test_hub_offline import COMMIT, vidinv_offline
    from vidinv.models.tiny_flow import tiny_flow_pipeline

    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-hunyuan"
    tiny_flow_pipeline("tiny-hunyuan").save_pretrained(repo / "snapshots" / COMMIT)  # the hub cache's layout
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    done, seconds = vidinv_offline(tmp_path / "hf", "info", "someone/tiny-hunyuan")
    assert done.returncode == 0, done.stderr
    assert "family           hunyuan" in done.stdout and "pipeline         HunyuanVideoPipeline" in done.stdout
    assert len(done.stderr.splitlines()) <= 1 and seconds < 60


@pytest.mark.slow
def test_bench_flops_counts_hunyuanvideo_13b_per_latent_frame(run_script):  # noqa: F811 (the fixture)
    """scripts/archs.py's HunyuanVideo is the published 13B shape (12821.0 M transformer parameters in
    diffusers' count); its frame-call is per latent frame, FlowEdit one row a prompt (embedded guidance)."""
    bench, record = run_script("bench_flops", "--cases", "hunyuan:64x96", "--frames", "4", "--steps", "4")
    reference, hunyuan = record["rows"]
    assert (hunyuan["case"], hunyuan["frames"], hunyuan["latent_frames"]) == ("hunyuan@64x96", 5, 2)
    assert round(hunyuan["unet_params_m"], 1) == 12821.0 and hunyuan["vs_sd15_512"] > 0
    # FlowEdit with the defaults: n_max = round(33/50 x 4) = 3, both branches, one row each, 2 latent frames
    assert hunyuan["flowedit_frame_calls"] == 2 * 3 * 2
    flops = hunyuan["flops"]
    assert hunyuan["flowedit_tflop"] == pytest.approx(
        (12 * flops["unet_call"] + 5 * (flops["vae_encode"] + flops["vae_decode"])) / 1e12
    )


def test_the_second_order_bench_runs_tiny_hunyuan_with_freeinv_beside_the_step_rules(run_script):  # noqa: F811 (the fixture)
    argv = ["--models", "tiny-hunyuan", "--steps", "2", "--methods", "flow", "freeinv", "fireflow"]
    bench, record = run_script("bench_second_order", *argv, "--frames", "5", "--height", "32", "--width", "32")
    rows = {(r["method"], r["steps"]): r for r in record["rows"]}
    assert rows["freeinv", 2]["frame_calls"] == rows["flow", 2]["frame_calls"] == 2 * 2 * 2  # 2 latent frames
    assert rows["fireflow", 2]["evaluations"] == 3 and all(r["error"] > 0 for r in rows.values())
