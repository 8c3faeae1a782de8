"""CogVideoX (tiny, random weights): a DDPM video DiT (v-prediction on CogVideoXDDIMScheduler's
zero-terminal-SNR DDIM grid) under vidinv's DDPM-grid inversions, called on the whole latent clip.

DDIM inversion and regeneration against loops written from CogVideoXPipeline's own calls (its
`encode_prompt`, `_prepare_rotary_positional_embeddings`, the bare transformer, the scheduler's alphas
and `step`); FreeInv / MBDI / edit-friendly DDPM on the video latent; the clip VAE as the pipeline
scales it; what the family cannot take refused in one line before loading; the jobs through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vidinv.cli import main
from vidinv.config import config_from_dict
from vidinv.errors import VidinvError
from vidinv.inversion import api
from vidinv.inversion.api import ReconstructionStats
from vidinv.models import load_models
from vidinv.models.flow import PipelineModels, flow_family_of
from vidinv.models.tiny_configs import T5_TOKENS
from vidinv.models.tiny_flow import build_tiny_cogvideox_components, tiny_flow_pipeline

FRAMES, LATENT_FRAMES, H, W = 9, 3, 64, 64  # 9 frames = 3 latent frames of 8x8
PROMPT = "a man riding a bike"


@pytest.fixture(scope="module")
def cog():
    return load_models("tiny-cogvideox", dtype="fp32", device="cpu")


def settings(**inversion) -> object:
    return config_from_dict(
        {
            "model": {"pretrained": "tiny-cogvideox", "frame_attention": "none", "device": "cpu"},
            "inversion": {"source_prompt": PROMPT, "guidance_scale": 1.0, **inversion},
        }
    )


def clip_latents(seed: int = 0) -> torch.Tensor:
    return torch.randn(LATENT_FRAMES, 16, H // 8, W // 8, generator=torch.Generator().manual_seed(seed))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# --- parity with CogVideoXPipeline's own calls ---------------------------------------------------


def own_config(module) -> dict:
    """A diffusers module's config without its bookkeeping keys (`_use_default_values` would drop the
    keys it lists from a config built on it)."""
    return {k: v for k, v in dict(module.config).items() if not k.startswith("_")}


def sinusoidal(models) -> PipelineModels:
    """tiny-cogvideox with CogVideoX-2b's sinusoidal positions (no rotary embeddings) in place of 5b's rotary ones."""
    from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel

    parts = build_tiny_cogvideox_components()
    config = own_config(parts["transformer"]) | {"use_rotary_positional_embeddings": False}
    torch.manual_seed(1)
    parts["transformer"] = CogVideoXTransformer3DModel.from_config(config).eval().requires_grad_(False)
    return PipelineModels(CogVideoXPipeline(**parts), "cogvideox", models.device, models.dtype, "sinusoidal", T5_TOKENS)


def pipeline_prediction(pipe, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """The transformer's v for latents z (f c h w), called as CogVideoXPipeline's denoising loop calls it."""
    rotary = None
    if pipe.transformer.config.use_rotary_positional_embeddings:
        rotary = pipe._prepare_rotary_positional_embeddings(H, W, z.shape[0], z.device)
    return pipe.transformer(
        hidden_states=z[None],
        encoder_hidden_states=embeds,
        timestep=t.expand(1),
        image_rotary_emb=rotary,
        return_dict=False,
    )[0][0].float()


@pytest.mark.parametrize("positions", ["rotary", "sinusoidal"])
@torch.no_grad()
def test_ddim_inversion_and_regeneration_match_loops_of_the_pipelines_own_calls(cog, positions):
    """Inversion: the DDIM step run upwards with the scheduler's float64 alphas, x0 and eps from v as
    CogVideoXDDIMScheduler forms them; regeneration: the pipeline's loop with the scheduler's `step`
    (its zero-SNR first step included). Both within 1e-4 (relative) of vidinv's."""
    models = cog if positions == "rotary" else sinusoidal(cog)
    pipe, steps, x0 = models.pipeline, 6, clip_latents()
    assert pipe.transformer.config.use_rotary_positional_embeddings == (positions == "rotary")
    record = api.invert(models, x0, settings(method="ddim", steps=steps))
    embeds, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False, max_sequence_length=T5_TOKENS)
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    alphas, ratio = scheduler.alphas_cumprod, scheduler.config.num_train_timesteps // steps
    assert alphas[-1] == 0  # zero terminal SNR: the first step starts from pure noise
    z = x0.double()
    for t in reversed(scheduler.timesteps):  # from x0 up to z_T
        a_from = alphas[t - ratio] if t - ratio >= 0 else scheduler.final_alpha_cumprod.double()
        v = pipeline_prediction(pipe, z.float(), t, embeds).double()
        x0_hat, eps = a_from**0.5 * z - (1 - a_from) ** 0.5 * v, a_from**0.5 * v + (1 - a_from) ** 0.5 * z
        z = alphas[t] ** 0.5 * x0_hat + (1 - alphas[t]) ** 0.5 * eps
    assert relative(record.latents[0], z) < 1e-4
    latents = record.latents[0].clone()
    for t in scheduler.timesteps:
        latents = scheduler.step(pipeline_prediction(pipe, latents, t, embeds), t, latents, return_dict=False)[0]
    assert relative(api.reconstruct(models, record, settings(method="ddim", steps=steps)), latents.float()) < 1e-4


# --- the inversion methods on the video latent ------------------------------------------------


@torch.no_grad()
def test_freeinv_without_transforms_is_ddim_bit_for_bit(cog):
    x0 = clip_latents(1)
    a = api.invert(cog, x0, settings(method="ddim", steps=4))
    b = api.invert(cog, x0, settings(method="freeinv", transforms="none", steps=4))
    assert b.transforms == ["id"] * 4 and torch.equal(a.latents, b.latents)


@torch.no_grad()
def test_freeinv_shows_the_transformer_every_latent_frame_in_the_steps_orientation(cog):
    """One transform per step for the whole clip: the latent video the transformer sees is the step's
    transform applied to the spatial axes of every latent frame."""
    from vidinv import transforms as tf

    seen = []
    hook = cog.transformer.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["hidden_states"].clone()), with_kwargs=True
    )
    try:
        record = api.invert(cog, clip_latents(2), settings(method="freeinv", steps=6, transforms="rot90", seed=3))
    finally:
        hook.remove()
    assert len(seen) == 6 and len(set(record.transforms)) > 1
    for i, video in zip(reversed(range(6)), seen):  # inversion runs from x0 (step N-1) to z_T (step 0)
        z = record.latents[i + 1]  # inversion step i evaluates the model at the latent below
        assert torch.equal(video, tf.apply(record.transforms[i], z)[None]), (i, record.transforms[i])


@pytest.mark.parametrize("steps, skip", [(5, 0), (8, 3)])
@torch.no_grad()
def test_edit_friendly_ddpm_inversion_regenerates_the_clip_exactly(cog, steps, skip):
    """Exact through the zero-SNR first step too (x0 from v where eps cannot say it)."""
    x0 = clip_latents(3)
    cfg = config_from_dict(
        {
            "model": {"pretrained": "tiny-cogvideox", "device": "cpu"},
            "inversion": {"method": "ddpm_ef", "steps": steps, "source_prompt": PROMPT},
            "edit": {"skip": skip},
        }
    )
    record = api.invert(cog, x0, cfg)
    assert record.noise_maps.shape == (steps, *x0.shape) and record.prediction_type == "v_prediction"
    stats = ReconstructionStats()
    out = api.reconstruct(cog, record, cfg, stats=stats)
    assert stats.frame_calls == (steps - skip) * LATENT_FRAMES * 2  # CFG 3.5: two rows
    assert (out - x0).abs().max() < 1e-5


@torch.no_grad()
def test_mbdi_runs_the_whole_group_on_the_video_latent_every_step(cog):
    cfg = settings(method="mbdi", transforms="flips", steps=3)
    record = api.invert(cog, clip_latents(4), cfg)
    assert record.stats.frame_calls == 4 * 3 * LATENT_FRAMES
    stats = ReconstructionStats()
    out = api.reconstruct(cog, record, cfg, stats=stats)
    assert stats.frame_calls == 4 * 3 * LATENT_FRAMES and torch.isfinite(out).all()


# --- loading, the VAE, what the family cannot take ----------------------------------------------


def test_tiny_cogvideox_is_a_ddpm_video_model_and_a_saved_folder_loads_back(cog, tmp_path):
    assert flow_family_of("tiny-cogvideox") == "cogvideox" and cog.family.video and not cog.family.flow
    assert cog.prediction_type == "v_prediction" and type(cog.scheduler).__name__ == "CogVideoXDDIMScheduler"
    tiny_flow_pipeline("tiny-cogvideox").save_pretrained(tmp_path / "cog")
    assert flow_family_of(str(tmp_path / "cog")) == "cogvideox"
    loaded = load_models(str(tmp_path / "cog"), dtype="fp32", device="cpu")
    assert loaded.family.name == "cogvideox"
    assert api.scheduler_config(loaded.scheduler) == api.scheduler_config(cog.scheduler)
    reference = cog.transformer.state_dict()
    assert all(torch.equal(t, reference[k]) for k, t in loaded.transformer.state_dict().items())


@torch.no_grad()
def test_the_clip_vae_equals_the_pipelines_whole_clip_encode_and_decode(cog):
    """Latents are the posterior mean x scaling_factor, frames decoded from latents / scaling_factor."""
    from einops import rearrange

    from vidinv.models.vae import decode_latents, encode_frames

    vae, s = cog.vae, cog.vae.config.scaling_factor
    frames = torch.rand(FRAMES, 3, H, W, generator=torch.Generator().manual_seed(5)) * 2 - 1
    latents = encode_frames(vae, frames, chunk=4)
    mean = vae.encode(rearrange(frames, "t c h w -> 1 c t h w")).latent_dist.mean
    assert latents.shape == (LATENT_FRAMES, 16, H // 8, W // 8)
    assert torch.equal(latents, rearrange(mean, "1 c t h w -> t c h w") * s)
    decoded = vae.decode(rearrange(latents, "t c h w -> 1 c t h w") / s).sample.clamp(-1, 1)
    assert torch.equal(decode_latents(vae, latents, chunk=2), rearrange(decoded, "1 c t h w -> t c h w"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("video.num_frames=8", "video.num_frames: 8 frames cannot be encoded.*nearest: 1 or 9"),
        (
            "video.num_frames=13",
            "video.num_frames: 13 frames cannot be encoded.*1 \\+ a multiple of 8.*nearest: 9 or 17",
        ),
        ("video.height=56", "video.height: 56 is not a multiple of 16.*use 48 or 64"),
        ("edit.method=flowedit", "edit.method: flowedit needs a flow-matching model; on CogVideoX.*use pnp"),
        ("edit.method=fatezero", "edit.method: fatezero runs on frame models; on CogVideoX.*use pnp"),
        ("edit.method=tokenflow", "edit.method: tokenflow runs on frame models"),
        ("inversion.method=flow", "inversion.method: flow needs a flow-matching model"),
    ],
)
def test_what_cogvideox_cannot_take_is_refused_in_one_line_before_anything_runs(tmp_path, capsys, override, message):
    """By the plan, from configs alone (no weights), and so by the CLI before anything loads."""
    from vidinv.config import load_config
    from vidinv.planning import plan_run

    with pytest.raises(VidinvError, match=message):
        plan_run(load_config("configs/tiny/cogvideox_edit.yaml", [override]), "edit")
    out = tmp_path / "run"
    assert main(["--quiet", "edit", "configs/tiny/cogvideox_edit.yaml", override, f"runtime.output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vidinv: error: "), err
    assert __import__("re").search(message, err), err
    assert not (out / "inversion").exists()


# --- the jobs through the CLI -----------------------------------------------------------------


def test_reconstruct_job_inverts_the_video_latent_with_the_calls_the_plan_predicts(tmp_path, capsys):
    from vidinv.planning import plan_run

    out = tmp_path / "run"
    args = ["--quiet", "reconstruct", "configs/tiny/cogvideox_edit.yaml", "inversion.guidance_scale=1"]
    assert main([*args, f"runtime.output_dir={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == FRAMES and metrics["latent_shape"] == [LATENT_FRAMES, 16, 8, 8]
    assert len(metrics["psnr_db_per_frame"]) == FRAMES
    predicted = plan_run(config_from_dict(json.loads(json.dumps(_resolved(out)))), "reconstruct").frame_calls
    assert metrics["frame_calls"] == {"inversion": 4 * LATENT_FRAMES, "reconstruction": 4 * LATENT_FRAMES} == predicted


def _resolved(out):
    import yaml

    return yaml.safe_load((out / "config.yaml").read_text())


def test_a_source_that_names_cogvideox_is_refused_in_one_line_when_it_cannot_be_read(tmp_path):
    folder = tmp_path / "cog"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    assert flow_family_of(str(folder)) == "cogvideox"
    with pytest.raises(VidinvError, match="model.pretrained: cannot load folder") as err:
        load_models(str(folder), dtype="fp32", device="cpu")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", ["freeinv", "ddpm_ef"])
def test_edit_job_writes_every_frame_with_the_latent_frame_calls_the_plan_predicts(tmp_path, capsys, method):
    from safetensors import safe_open

    from vidinv.io import read_video
    from vidinv.planning import plan_run

    out = tmp_path / "run"
    args = [f"inversion.method={method}", f"runtime.output_dir={out}"]
    assert main(["--quiet", "edit", "configs/tiny/cogvideox_edit.yaml", *args]) == 0
    assert "edited 9 frames 64x64" in capsys.readouterr().out
    for name in ("edited.mp4", "source.mp4", "side_by_side.mp4"):
        assert read_video(out / name).frames.shape[0] == FRAMES, name
    metrics = json.loads((out / "metrics.json").read_text())
    plan = plan_run(config_from_dict(json.loads(json.dumps(_resolved(out)))), "edit")
    with safe_open(out / "inversion" / "tensors.safetensors", "pt") as tensors:
        stored = sum(math.prod(tensors.get_slice(name).get_shape()) * 4 for name in tensors.keys())
    assert plan.record_bytes == stored  # ddpm_ef: its noise maps too
    if method == "freeinv":  # 3 latent frames x (4 steps x 2 CFG edit rows + 3 injected steps x 1 source row)
        assert metrics["frame_calls"] == {"inversion": 4 * 3, "edit": 3 * (4 * 2 + 3)}
    assert metrics["frame_calls"] == plan.frame_calls


# --- PnP on the transformer's joint attention -------------------------------------------------


@torch.no_grad()
def test_the_hooked_joint_attention_computes_what_diffusers_processor_does(cog):
    from vidinv.attention.handle import frame_attention_of, remove_frame_attention
    from vidinv.attention.inflate import ensure_frame_attention
    from vidinv.inversion.flow_denoiser import FlowGuidedModel

    model, z, t = FlowGuidedModel.for_prompt(cog, PROMPT, 6.0), clip_latents(6), torch.tensor(501)
    reference = model(z, t)
    handle = ensure_frame_attention(cog.transformer)
    try:
        assert handle.self_layers == ("transformer_blocks.0.attn1", "transformer_blocks.1.attn1")
        assert torch.allclose(model(z, t), reference, atol=1e-6, rtol=0)
    finally:
        remove_frame_attention(cog.transformer)
    assert frame_attention_of(cog.transformer) is None


@torch.no_grad()
def test_pnp_injects_the_source_rows_video_queries_and_keys_into_the_edit_rows(cog, monkeypatch):
    """While injecting, every edit row's video-token q and k at the injected layers are the source
    row's (its values, and its text tokens, stay the edit's); the edit differs from one without."""
    from vidinv import VideoEditor
    from vidinv.editing.injection import PnPInjection

    seen, qkv = [], PnPInjection.qkv

    def recorded(self, layer, q, k, v, frames):  # what the injection hands the attention
        out = qkv(self, layer, q, k, v, frames)
        seen.append((layer, *(t.clone() for t in out)))
        return out

    def edit(inject: float):
        pnp = {"inject_attention": inject, "inject_features": 0.0, "attention_layers": ["transformer_blocks.1.attn1"]}
        editor = VideoEditor(
            {
                "model": {"pretrained": "tiny-cogvideox", "device": "cpu"},
                "inversion": {"method": "ddim", "steps": 3, "source_prompt": PROMPT},
                "edit": {"method": "pnp", "guidance_scale": 1.0, "pnp": pnp},
            },
            models=cog,
        )
        return editor.edit_latents(clip_latents(7), "a robot").latents

    plain = edit(0.0)
    monkeypatch.setattr(PnPInjection, "qkv", recorded)
    injected = edit(1.0)
    assert not torch.equal(plain, injected)
    at_layer = [(q, k, v) for layer, q, k, v in seen if layer == "transformer_blocks.1.attn1" and len(q) == 2]
    assert len(at_layer) == 3  # one call an edit step, the source and edit rows together (the inversion's: one row)
    for q, k, v in at_layer:
        assert q.shape[:2] == (2, 1) and torch.equal(q[1], q[0]) and torch.equal(k[1], k[0])
        assert not torch.equal(v[1], v[0])


def test_info_names_the_ddpm_grid_and_the_edit_methods_that_run(capsys):
    assert main(["info", "tiny-cogvideox"]) == 0
    report = capsys.readouterr().out
    assert "prediction type  v_prediction, CogVideoXDDIMScheduler" in report
    assert "grid             trailing DDIM, SNR shift 3.0, zero terminal SNR" in report
    assert "frames           1 + a multiple of 8" in report and "edit methods     pnp\n" in report


@torch.no_grad()
def test_pnp_feature_injection_copies_the_source_rows_video_stream_of_a_block(cog):
    """CogVideoX's blocks return (video, text): the video stream of the named block is the source row's
    in every edit row while injecting (the next block's input), its text stream stays the edit's."""
    from vidinv import VideoEditor

    seen = []
    spy = cog.transformer.transformer_blocks[1].register_forward_pre_hook(
        lambda m, a, kw: seen.append((kw["hidden_states"].clone(), kw["encoder_hidden_states"].clone())),
        with_kwargs=True,
    )
    pnp = {"inject_attention": 0.0, "inject_features": 1.0, "feature_layers": ["transformer_blocks.0"]}
    editor = VideoEditor(
        {
            "model": {"pretrained": "tiny-cogvideox", "device": "cpu"},
            "inversion": {"method": "ddim", "steps": 3, "source_prompt": PROMPT},
            "edit": {"method": "pnp", "guidance_scale": 1.0, "pnp": pnp},
        },
        models=cog,
    )
    try:
        editor.edit_latents(clip_latents(8), "a robot")
    finally:
        spy.remove()
    rows = [(video, text) for video, text in seen if len(video) == 2]  # the edit's calls: source + edit row
    assert len(rows) == 3
    for video, text in rows:
        assert torch.equal(video[1], video[0]) and not torch.equal(text[1], text[0])


def test_cogvideox_15s_temporal_patch_takes_whole_patches_of_latent_frames(tmp_path):
    """CogVideoX 1.5 patches 2 latent frames a token (`patch_size_t`), while the VAE decodes an odd count
    of latent frames only (its pairs after the first): no clip fits both without the padding its pipeline
    adds, so the plan refuses it in one line; whole patches of latents invert and regenerate through the
    same calls."""
    from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel

    from vidinv.config import load_config
    from vidinv.planning import plan_run

    parts = build_tiny_cogvideox_components()
    config = own_config(parts["transformer"]) | {"patch_size_t": 2}
    parts["transformer"] = CogVideoXTransformer3DModel.from_config(config).eval()
    CogVideoXPipeline(**parts).save_pretrained(tmp_path / "cog15")
    overrides = [f"model.pretrained={tmp_path / 'cog15'}", "inversion.method=ddim"]
    with pytest.raises(VidinvError, match=r"temporal patch \(2 latent frames\) takes an even count.*no clip fits both"):
        plan_run(load_config("configs/tiny/cogvideox_edit.yaml", overrides), "reconstruct")
    models = load_models(str(tmp_path / "cog15"), dtype="fp32", device="cpu")
    x0 = torch.cat([clip_latents(9), clip_latents(10)[:1]])  # 4 latent frames
    record = api.invert(models, x0, settings(method="ddpm_ef", steps=3))
    assert (api.reconstruct(models, record, settings(method="ddpm_ef", steps=3)) - x0).abs().max() < 1e-5


@pytest.mark.slow
def test_a_cached_cogvideox_hub_id_runs_from_the_cache_with_one_note_when_the_hub_is_unreachable(tmp_path):
    """The hub-id probe of the other families: the pipeline is recognised from the cached model_index.json
    and loaded from the cache, with one note, when the hub cannot be reached."""
    from tests.test_hub_offline import COMMIT, UNREACHABLE, vidinv_offline

    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-cogvideox"
    tiny_flow_pipeline("tiny-cogvideox").save_pretrained(repo / "snapshots" / COMMIT)  # the hub cache's layout
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    out = tmp_path / "run"
    args = ["invert", "configs/tiny/cogvideox_edit.yaml", "model.pretrained=someone/tiny-cogvideox",
            "inversion.steps=2", f"runtime.output_dir={out}"]  # fmt: skip
    done, _ = vidinv_offline(tmp_path / "hf", *args)
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("vidinv: note:")]
    assert notes == [
        f"vidinv: note: the hub {UNREACHABLE} cannot be reached (ConnectError);"
        " loading 'someone/tiny-cogvideox' from the hub cache"
    ], done.stderr
    assert (out / "inversion" / "record.json").is_file()


def test_a_mask_from_words_reads_the_joint_attentions_video_queries_on_the_words(tmp_path, capsys, monkeypatch):
    """edit.mask_words on CogVideoX: the word maps come from its joint attention (video queries on the
    text keys, every layer), the edit runs masked with the frame-calls the plan predicts."""
    from vidinv.editing.masks import WordMaps
    from vidinv.planning import plan_run

    shapes, video_maps = [], WordMaps.video_maps

    def recorded(self, q, k, scale):
        shapes.append((tuple(q.shape), tuple(k.shape)))
        return video_maps(self, q, k, scale)

    monkeypatch.setattr(WordMaps, "video_maps", recorded)
    out = tmp_path / "run"
    args = ["--quiet", "edit", "configs/tiny/cogvideox_edit.yaml", "edit.mask_words=[man]", f"runtime.output_dir={out}"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["edit"]["mask"]["origin"] == "edit.mask_words" and metrics["edit"]["mask"]["source_calls"] > 0
    plan = plan_run(config_from_dict(json.loads(json.dumps(_resolved(out)))), "edit")
    assert metrics["frame_calls"] == plan.frame_calls
    heads, head_dim = 2, 16  # the tiny transformer's; 3 latent frames of 4 x 4 tokens, 32 text tokens
    assert shapes and set(shapes) == {((1, 3 * 4 * 4, heads, head_dim), (1, T5_TOKENS, heads, head_dim))}


def test_a_clip_of_an_even_count_of_latent_frames_is_refused_before_the_inversion(cog):
    """CogVideoX's VAE decodes the latent frames after the first in pairs: 5 frames (2 latent frames)
    would come back as 8. Through the API (no plan before it) the encoder refuses them in one line."""
    from vidinv import VideoEditor

    config = {"model": {"device": "cpu", "frame_attention": "none"}, "inversion": {"steps": 2, "method": "ddim"}}
    editor = VideoEditor(config | {"edit": {"method": "pnp"}}, models=cog)
    frames = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with pytest.raises(VidinvError, match=r"the clip: 5 frames cannot be encoded.*multiple of 8.*nearest: 1 or 9"):
        editor.edit(frames, "a blue bus", source_prompt="a red car")
    decoded = editor.models.vae.decode(torch.zeros(1, 16, 2, 4, 4)).sample  # what the refusal spares a user
    assert decoded.shape[2] == 8
