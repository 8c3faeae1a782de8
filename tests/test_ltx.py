"""LTX-Video (tiny, random weights) as a native video model: flow inversion equal to an Euler reversal
written from LTXPipeline's own calls (packed tokens, the prompt's attention mask, mu from the latent
clip's token count); FreeInv's transform on every latent frame; FlowEdit's identity edit; its whole-clip
VAE equal to diffusers' calls normalised as LTXPipeline does; frame counts and sizes it cannot take
refused in one line before loading; the jobs through the CLI making the frame-calls `vidinv plan` predicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from einops import rearrange

from vidinv.cli import main
from vidinv.config import config_from_dict, load_config
from vidinv.errors import VidinvError
from vidinv.inversion import invert
from vidinv.models import load_models
from vidinv.models.families import FAMILIES
from vidinv.models.tiny_flow import tiny_flow_pipeline

CONFIG = "configs/tiny/ltx_edit.yaml"
PROMPT = "a red car"


@pytest.fixture(scope="module")
def ltx():
    return load_models("tiny-ltx", dtype="fp32", device="cpu")


def flow_config(method: str = "flow", *, steps: int = 4, **inversion):
    return config_from_dict(
        {
            "model": {"pretrained": "tiny-ltx", "dtype": "fp32", "device": "cpu", "frame_attention": "none"},
            "inversion": {"method": method, "steps": steps, "source_prompt": PROMPT, **inversion},
        }
    )


def latents(frames: int = 3, h: int = 2, w: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(frames, 16, h, w, generator=torch.Generator().manual_seed(seed))


def pack(z: torch.Tensor) -> torch.Tensor:
    """Latent frames (f c h w) as LTXPipeline's token sequence (1, f h w, c) (patch 1)."""
    from diffusers import LTXPipeline

    return LTXPipeline._pack_latents(rearrange(z, "f c h w -> 1 c f h w"), 1, 1)


def reference_ltx_inversion(models, x0: torch.Tensor, prompt: str, guidance: float, steps: int) -> torch.Tensor:
    """The Euler reversal z <- z + (sigma_k - sigma_{k+1}) v(z, 1000 sigma_{k+1}) of one latent clip
    x0 (f c h w), written from LTXPipeline.__call__'s own steps on the bare transformer: its prompt
    encoding with masks, sigmas linspace(1, 1/N, N) shifted by calculate_shift(video sequence length),
    `_pack_latents`, the transformer call (num_frames / height / width / rope_interpolation_scale /
    encoder_attention_mask over the (uncond, cond) batch), CFG, `_unpack_latents`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

    pipe, transformer = models.pipeline, models.transformer
    f, _, h, w = x0.shape
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    cfg = scheduler.config
    mu = calculate_shift(f * h * w, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    embeds, mask, negative, negative_mask = pipe.encode_prompt(
        prompt, "", do_classifier_free_guidance=True, max_sequence_length=models.max_sequence_length
    )
    embeds, mask = torch.cat([negative, embeds]), torch.cat([negative_mask, mask])
    space, time = pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio
    rope = (time / 25, space, space)  # frame_rate 25, LTXPipeline's default

    def velocity(z, t):
        v = transformer(
            hidden_states=torch.cat([z, z]),
            encoder_hidden_states=embeds,
            timestep=t.expand(2),
            encoder_attention_mask=mask,
            num_frames=f,
            height=h,
            width=w,
            rope_interpolation_scale=rope,
            return_dict=False,
        )[0].float()
        uncond, cond = v.chunk(2)
        return uncond + guidance * (cond - uncond)

    z, sigmas = pack(x0), scheduler.sigmas
    with torch.no_grad():
        for k in reversed(range(steps)):
            z = z + (sigmas[k] - sigmas[k + 1]) * velocity(z, 1000 * sigmas[k + 1])
    return rearrange(LTXPipeline._unpack_latents(z, f, h, w, 1, 1), "1 c f h w -> f c h w")


def test_flow_inversion_equals_an_euler_reversal_from_ltx_pipelines_own_calls(ltx):
    """3 latent frames, CFG 3.0 (the prompt rows' masks differ): vidinv's record == the loop above
    (relative difference < 1e-4 in fp32; measured 0 at CFG 3, 7.6e-8 at guidance 1; 3.8e-2 with the
    attention mask left out of the transformer call)."""
    x0 = latents()
    record = invert(ltx, x0, flow_config(guidance_scale=3.0))
    reference = reference_ltx_inversion(ltx, x0, PROMPT, 3.0, 4)
    diff = float((record.latents[0] - reference).norm() / reference.norm())
    assert diff < 1e-4, f"relative difference {diff:.2e}"
    assert record.sampler == "flow" and record.prediction_type == "flow"


def test_the_grid_is_shifted_by_mu_of_the_whole_latent_clips_tokens(ltx):
    """LTXPipeline's mu reads the video sequence length (latent frames x h x w); Flux's the tokens of
    one frame in 2x2 patches, whatever the frame count."""
    from vidinv.inversion.flow import flow_table, flow_table_for

    family, config = FAMILIES["ltx"], dict(ltx.transformer.config)
    assert family.sequence_length(config, (21, 128, 16, 22)) == 21 * 16 * 22  # the published 161 x 512 x 704
    assert FAMILIES["flux"].sequence_length({}, (5, 16, 64, 64)) == 32 * 32
    x = latents(5, 4, 6)
    table = flow_table_for(ltx, 6, x)
    assert torch.equal(table.sigmas, flow_table(ltx.scheduler, 6, tokens=5 * 4 * 6).sigmas)
    assert not torch.equal(table.sigmas, flow_table_for(ltx, 6, x[:1]).sigmas)
    assert float(table.sigmas[-2]) == pytest.approx(0.1)  # shift_terminal: the last sigma before 0
    with pytest.raises(VidinvError, match=r"^inversion.steps: 1 step: .*shift_terminal 0.1.* 2 or more steps$"):
        flow_table_for(ltx, 1, x)  # diffusers' stretch of one sigma is 0 / 0: NaN


def test_freeinv_without_transforms_is_flow_inversion_bit_for_bit(ltx):
    from tests.inversion_properties import assert_freeinv_without_transforms_is_flow

    config_of = lambda method: flow_config(method, transforms="none", guidance_scale=2.0)  # noqa: E731
    assert_freeinv_without_transforms_is_flow(ltx, latents(seed=1), config_of)


@torch.no_grad()
def test_freeinv_shows_the_transformer_every_latent_frame_in_the_steps_orientation(ltx):
    """One transform per step for the whole clip: the token sequence the transformer sees is the
    step's transform applied to the spatial axes of every latent frame, then packed."""
    from vidinv import transforms as tf

    x0 = latents(3, 4, 4, seed=4)
    seen = []
    hook = ltx.transformer.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["hidden_states"].clone()), with_kwargs=True
    )
    try:
        record = invert(ltx, x0, flow_config("freeinv", steps=6, transforms="rot90", seed=3, guidance_scale=1.0))
    finally:
        hook.remove()
    assert len(seen) == 6 and len(set(record.transforms)) > 1
    for i, tokens in zip(reversed(range(6)), seen):  # inversion runs from x0 (step N-1) to z_T (step 0)
        z = record.latents[i + 1]  # inversion step i evaluates the model at the latent below
        assert torch.equal(tokens, pack(tf.apply(record.transforms[i], z))), (i, record.transforms[i])


@pytest.mark.parametrize("method", ["flow", "freeinv"])
def test_flowedit_with_the_source_prompt_as_target_returns_the_source_exactly(ltx, method):
    from vidinv.editor import VideoEditor

    config = {
        "model": {"pretrained": "tiny-ltx", "dtype": "fp32", "device": "cpu", "frame_attention": "none"},
        "inversion": {"method": method, "steps": 6, "source_prompt": PROMPT},
        "edit": {"method": "flowedit", "flowedit": {"source_guidance": 3.0, "target_guidance": 3.0}},
    }
    x_src = latents(3, 4, 4, seed=5)
    out = VideoEditor(config, models=ltx).edit_latents(x_src, PROMPT)
    assert torch.equal(out.latents, x_src)
    assert out.stats.frame_calls == 4 * 2 * 2 * 3  # n_max 4 of 6 x (source, target) x CFG rows x 3 latent frames


def test_flowedit_defaults_are_sd3s_fractions_and_ltx_pipelines_guidance():
    defaults = FAMILIES["ltx"].flowedit_defaults
    assert (defaults.n_max_fraction, defaults.target_guidance) == (33 / 50, 3.0)
    assert 1.0 < defaults.source_guidance < defaults.target_guidance


# --- the whole-clip VAE ---------------------------------------------------------------------------------


def clip(frames: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(frames, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def diffusers_latents(vae, frames: torch.Tensor) -> torch.Tensor:
    """diffusers' whole-clip encode (its own tiling when enabled), normalised as LTXPipeline does."""
    from diffusers import LTXPipeline

    mean_z = vae.encode(rearrange(frames, "t c h w -> 1 c t h w")).latent_dist.mean
    z = LTXPipeline._normalize_latents(mean_z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    return rearrange(z, "1 c t h w -> t c h w")


def diffusers_frames(vae, latents: torch.Tensor) -> torch.Tensor:
    """LTXPipeline's decode of latent frames (timestep_conditioning off: no decode timestep)."""
    from diffusers import LTXPipeline

    z = rearrange(latents, "t c h w -> 1 c t h w")
    z = LTXPipeline._denormalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    return rearrange(vae.decode(z, None).sample, "1 c t h w -> t c h w").clamp(-1, 1)


# tile 128 px: diffusers' stride 96 px is 3 latent pixels; 192x224 frames are 2x3 tiles
@pytest.mark.parametrize(("tile", "size"), [(None, (64, 96)), (128, (192, 224))], ids=["whole", "tiled"])
@torch.no_grad()
def test_clip_vae_encodes_and_decodes_as_diffusers_whole_clip_calls(ltx, tile, size):
    """The tiny VAE's latent statistics are not zeros / ones: the normalisation is seen."""
    from vidinv.models.vae import _tiling, decode_latents, encode_frames

    vae = ltx.vae
    assert not torch.equal(vae.latents_mean, torch.zeros_like(vae.latents_mean))
    frames = clip(9, *size)
    latents_ = encode_frames(vae, frames, chunk=4, tile_size=tile)
    with _tiling(vae, tile):
        expected = diffusers_latents(vae, frames)
    assert latents_.shape == (2, 16, size[0] // 32, size[1] // 32)
    assert torch.equal(latents_, expected)
    decoded = decode_latents(vae, latents_, chunk=1, tile_size=tile)
    with _tiling(vae, tile):
        assert torch.equal(decoded, diffusers_frames(vae, latents_))
    assert decoded.shape == frames.shape


# --- bad inputs, before loading ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("video.num_frames=10", "video.num_frames: 10 frames cannot be encoded: the causal video VAE takes 1 + a"
         " multiple of 8 frames (nearest: 9 or 17)"),
        ("video.height=48", "video.height: 48 is not a multiple of 32 (the ltx transformer's tokens are 32x32"
         " pixels); use 32 or 64"),
    ],
)  # fmt: skip
def test_frame_counts_and_sizes_ltx_cannot_take_are_one_line_errors_before_loading(
    tmp_path, capsys, monkeypatch, override, message
):
    import vidinv.models.loading as loading

    monkeypatch.setattr(loading, "load_models", lambda *a, **k: pytest.fail("loaded"))
    out = tmp_path / "run"
    assert main(["edit", CONFIG, override, f"runtime.output_dir={out}"]) == 2
    assert capsys.readouterr().err.strip() == f"vidinv: error: {message}"
    assert main(["plan", CONFIG, override]) == 2
    assert capsys.readouterr().err.strip() == f"vidinv: error: {message}"
    assert not out.exists()


# --- the jobs through the CLI ----------------------------------------------------------------------------


def _resolved(out):
    import yaml

    return config_from_dict(yaml.safe_load((out / "config.yaml").read_text()))


@pytest.mark.slow
def test_edit_job_writes_every_frame_and_makes_the_planned_frame_calls(tmp_path, capsys):
    from vidinv.io import read_video
    from vidinv.planning import plan_run

    out = tmp_path / "run"
    assert main(["--quiet", "edit", CONFIG, f"runtime.output_dir={out}"]) == 0
    assert "edited 9 frames 64x128" in capsys.readouterr().out
    for name in ("edited.mp4", "source.mp4", "side_by_side.mp4"):
        assert read_video(out / name).frames.shape[0] == 9, name
    metrics = json.loads((out / "metrics.json").read_text())
    # 2 latent frames x 3 edited steps x (source + target branch) x 2 CFG rows
    assert metrics["frame_calls"] == {"inversion": 0, "edit": 2 * 3 * 2 * 2} == plan_run(_resolved(out)).frame_calls


@pytest.mark.slow
def test_reconstruct_job_inverts_the_video_latent_making_the_planned_frame_calls(tmp_path):
    from vidinv.planning import plan_run

    out = tmp_path / "run"
    assert main(["--quiet", "reconstruct", CONFIG, "inversion.method=flow", f"runtime.output_dir={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 9 and metrics["latent_shape"] == [2, 16, 2, 4]
    planned = plan_run(_resolved(out), "reconstruct").frame_calls
    assert metrics["frame_calls"] == {"inversion": 2 * 4, "reconstruction": 2 * 4} == planned  # guidance 1: one row
    assert len(metrics["psnr_db_per_frame"]) == 9


# --- loading -----------------------------------------------------------------------------------------------


def test_a_saved_ltx_folder_loads_as_the_family_with_the_vaes_statistics(tmp_path, capsys):
    pipe = tiny_flow_pipeline("tiny-ltx")
    pipe.save_pretrained(tmp_path / "ltx")
    models = load_models(str(tmp_path / "ltx"), dtype="fp32", device="cpu")
    assert models.family.name == "ltx" and models.video
    for part in ("transformer", "vae", "text_encoder"):
        want, got = getattr(pipe, part).state_dict(), getattr(models, part).state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), part
    assert main(["info", str(tmp_path / "ltx")]) == 0
    report = capsys.readouterr().out
    assert "LTXPipeline" in report and "(dynamic)" in report and "1 + a multiple of 8" in report


def original_layout(transformer) -> dict:
    """The transformer's weights in LTX-Video's original single-file layout (the inverse of diffusers'
    `convert_ltx_transformer_checkpoint_to_diffusers`)."""
    names = {"proj_in": "patchify_proj", "time_embed": "adaln_single", "norm_q": "q_norm", "norm_k": "k_norm"}
    out = {}
    for key, tensor in transformer.state_dict().items():
        for new, old in names.items():
            key = key.replace(new, old)
        out[f"model.diffusion_model.{key}"] = tensor.contiguous()
    return out


def test_an_original_layout_transformer_file_loads_with_its_config_folder(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from safetensors.torch import save_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    pipe = tiny_flow_pipeline("tiny-ltx")
    pipe.save_pretrained(tmp_path / "ltx")
    save_file(original_layout(pipe.transformer), tmp_path / "ltx.safetensors")
    models = load_models(str(tmp_path / "ltx.safetensors"), device="cpu", single_file_config=str(tmp_path / "ltx"))
    assert models.family.name == "ltx"
    want, got = pipe.transformer.state_dict(), models.transformer.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.slow
def test_a_cached_hub_id_runs_from_the_cache_with_one_note_when_the_hub_is_unreachable(tmp_path):
    from tests.test_hub_offline import COMMIT, UNREACHABLE, vidinv_offline

    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-ltx"
    tiny_flow_pipeline("tiny-ltx").save_pretrained(repo / "snapshots" / COMMIT)  # the hub cache's layout
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    out = tmp_path / "run"
    args = ["reconstruct", CONFIG, "model.pretrained=someone/tiny-ltx", "inversion.steps=2"]
    done, _ = vidinv_offline(tmp_path / "hf", *args, f"runtime.output_dir={out}")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"vidinv: note: the hub {UNREACHABLE} cannot be reached (ConnectError); loading 'someone/tiny-ltx' from the hub cache"
    ]
    assert (out / "metrics.json").is_file()


def test_the_published_config_is_the_tiny_ones_twin():
    config, tiny = load_config("configs/ltx_edit.yaml"), load_config(CONFIG)
    assert config.model.pretrained == FAMILIES["ltx"].published and tiny.model.pretrained == "tiny-ltx"
    assert (config.video.num_frames - 1) % 8 == 0 and config.video.height % 32 == 0 and config.video.width % 32 == 0


# --- the published architecture (scripts/archs.py, scripts/bench_flops.py) -------------------------------


@pytest.fixture
def load_script(monkeypatch):
    """load_script(name) -> scripts/<name>.py as a module (the scripts import benchlib, archs as siblings)."""
    import importlib
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    return importlib.import_module


def test_the_ltx_arch_is_ltx_video_2b_as_a_flow_model(load_script):
    """--arch ltx: LTX-Video 0.9's published shapes on the meta device (diffusers' count 1923.4 M)."""
    archs = load_script("archs")
    with torch.device("meta"):
        models = archs.build_models("ltx", "meta")
    assert (models.family.name, models.video, models.max_sequence_length) == ("ltx", True, 128)
    assert round(archs.parameters(models.transformer) / 1e6, 1) == 1923.4
    config = models.transformer.config
    assert (config.num_layers, config.num_attention_heads, config.attention_head_dim, config.in_channels) == (
        28,
        32,
        64,
        128,
    )
    assert (models.vae.spatial_compression_ratio, models.vae.temporal_compression_ratio) == (32, 8)
    assert models.scheduler.config.use_dynamic_shifting and models.text_encoder.config.d_model == 4096


@pytest.mark.slow
def test_bench_flops_counts_ltx_per_latent_frame_of_a_1_plus_8k_clip(load_script, tmp_path):
    out = tmp_path / "flops.json"
    load_script("bench_flops").main(["--cases", "ltx:64x96", "--frames", "8", "--steps", "4", "--json", str(out)])
    record = json.loads(out.read_text())
    reference, ltx = record["rows"]
    assert (ltx["case"], ltx["frames"], ltx["latent_frames"]) == ("ltx@64x96", 9, 2)  # 8 frames -> 1 + 8
    # FlowEdit with the defaults: n_max = round(33/50 x 4) = 3, CFG on both branches, in latent frames
    assert ltx["flowedit_frame_calls"] == 2 * 3 * (2 + 2) and "pnp_tflop" not in ltx
    flops = ltx["flops"]
    assert ltx["flowedit_tflop"] == pytest.approx(
        (24 * flops["unet_call"] + 9 * (flops["vae_encode"] + flops["vae_decode"])) / 1e12
    )


def test_flops_on_meta_copies_equal_the_tiny_models_own(load_script, ltx):
    from vidinv.models.flow import flow_condition

    archs = load_script("archs")
    real = archs.flow_unit_flops(ltx.family, ltx.transformer, ltx.vae, flow_condition(ltx, [""]), 64, 64, 9)
    assert archs.frame_flops(ltx, 64, 64, 9) == real and min(real.values()) > 0
