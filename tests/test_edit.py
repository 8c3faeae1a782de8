"""Editing (PnP): exactness against the reconstruction, injection, determinism, and the edit command."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import REPO
from vidinv.attention import run_unet
from vidinv.attention.inflate import frame_attention_of
from vidinv.cli import main
from vidinv.config import config_from_dict, load_config
from vidinv.editing import pnp_edit
from vidinv.editing.injection import PnPInjection, RowLayout, default_attention_layers
from vidinv.errors import VidinvError
from vidinv.inversion import invert, reconstruct
from vidinv.jobs.common import load_models_for
from vidinv.jobs.edit import WRITES as EDIT_WRITES

STEPS = 5


def edit_config(method="ddim", **edit):
    values = {"prompt": "a bike", "guidance_scale": 1.0, "inject_features": 1.0, "inject_attention": 1.0, **edit}
    prompt = values.pop("prompt")
    return config_from_dict(
        {
            "model": {"frame_attention": "sparse_causal"},
            "inversion": {"method": method, "steps": STEPS, "source_prompt": "a bike"},
            "edit": {"target_prompt": prompt, **values},
        }
    )


@pytest.fixture(scope="module")
def models():
    """The tiny model with sparse-causal attention installed (as the jobs load it)."""
    return load_models_for(edit_config())


def clip_latents(frames=3, h=8, w=8):
    return torch.randn(frames, 4, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", ["ddim", "freeinv", "mbdi"])
def test_same_prompt_guidance_1_full_injection_edit_equals_the_reconstruction(models, method):
    config = edit_config(method)
    record = invert(models, clip_latents(), config)
    expected = reconstruct(models, record, config)
    result = pnp_edit(models, record, config)
    torch.testing.assert_close(result.latents, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.source_latents, expected, atol=1e-4, rtol=0)


def test_ddpm_ef_edit_with_the_source_prompt_and_guidance_reproduces_the_input(models):
    """DDPM-EF regenerates exactly, so an edit with the source prompt and cfg_src from T_skip (no
    injection) gives back x0 and runs no source row: the record is the source branch."""
    config = edit_config("ddpm_ef", guidance_scale=3.5, inject_features=0.0, inject_attention=0.0)
    x0 = clip_latents()
    record = invert(models, x0, config)
    result = pnp_edit(models, record, config)
    torch.testing.assert_close(result.latents, x0, atol=1e-4, rtol=0)
    skip = round(0.36 * STEPS)
    assert result.stats["start_step"] == skip and result.stats["source_branch"] == "record"
    assert result.stats["frame_calls"] == 2 * 3 * (STEPS - skip)  # uncond + cond edit rows only


def test_ddpm_ef_source_row_is_the_records_latent_with_one_row_while_injecting(models):
    """With injection, the ddpm_ef source branch is one cond row at the record's latents, only
    for the injected steps: frame-calls F x (2 (S) + 1 (K - start))."""
    config = edit_config("ddpm_ef", prompt="a robot", guidance_scale=7.5, inject_features=0.8, inject_attention=0.4)
    record = invert(models, clip_latents(), config)
    result = pnp_edit(models, record, config)
    skip, injected = round(0.36 * STEPS), round(0.8 * STEPS)
    assert result.stats["source_steps"] == injected - skip
    assert result.stats["frame_calls"] == 3 * (2 * (STEPS - skip) + (injected - skip))


def test_a_different_target_prompt_changes_the_edit_and_the_same_seed_repeats_it(models):
    config = edit_config("freeinv", prompt="a robot", guidance_scale=7.5, inject_features=0.8, inject_attention=0.5)
    record = invert(models, clip_latents(), config)
    first, second = pnp_edit(models, record, config), pnp_edit(models, record, config)
    assert torch.equal(first.latents, second.latents)
    assert first.source_latents is None  # the source branch stopped after the last injected step
    assert first.stats["edit_rows"] == 2 and first.stats["source_steps"] == round(0.8 * STEPS)


def test_injection_fraction_changes_the_edit(models):
    config = edit_config("ddim", prompt="a robot", guidance_scale=7.5, inject_features=0.0, inject_attention=0.0)
    record = invert(models, clip_latents(), config)
    free = pnp_edit(models, record, config).latents
    injected = pnp_edit(models, record, edit_config("ddim", prompt="a robot", guidance_scale=7.5)).latents
    assert (free - injected).abs().max() > 1e-3


def test_inverted_source_branch_uses_the_stored_latents(models):
    config = edit_config("ddim", prompt="a robot", guidance_scale=7.5, source_branch="inverted")
    record = invert(models, clip_latents(), config)
    inverted = pnp_edit(models, record, config)
    reconstructed = pnp_edit(models, record, edit_config("ddim", prompt="a robot", guidance_scale=7.5))
    assert (inverted.latents - reconstructed.latents).abs().max() > 1e-4


def test_injected_rows_carry_the_source_rows_features_and_hooks_are_removed(models):
    """Inside an injected step, the edit rows' output of the feature layer equals the source row's."""
    unet, handle = models.unet, frame_attention_of(models.unet)
    layer = "up_blocks.1.resnets.1"
    captured = {}
    injection = PnPInjection(
        unet, handle, feature_layers=[layer], attention_layers=None, feature_steps=1, attention_steps=1
    )
    z = torch.randn(3, 3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    emb = torch.randn(3, 77, 32, generator=torch.Generator().manual_seed(2))
    with injection:
        # registered after the injection's hook, so it sees the injected output
        probe = unet.get_submodule(layer).register_forward_hook(lambda m, a, out: captured.__setitem__("x", out))
        try:
            injection.set_step(0, RowLayout.for_branches(n_source=1, n_edit=2))
            run_unet(unet, z, 500, emb)
        finally:
            probe.remove()
    assert not injection._removers and injection not in handle.hooks
    rows = captured["x"].reshape(3, 3, *captured["x"].shape[1:])
    torch.testing.assert_close(rows[1], rows[0])
    torch.testing.assert_close(rows[2], rows[0])


def test_a_guided_source_injects_row_by_role():
    layout = RowLayout.for_branches(n_source=2, n_edit=2)
    assert layout.sources == (0, 1) and layout.targets == (2, 3)
    assert RowLayout.for_branches(n_source=2, n_edit=1).sources == (1,)
    assert RowLayout.for_branches(n_source=1, n_edit=2).sources == (0, 0)


def test_default_attention_layers_are_the_decoder_self_attention_layers_but_the_first(models):
    handle = frame_attention_of(models.unet)
    layers = default_attention_layers(handle.self_layers)
    decoder = [name for name in handle.self_layers if name.startswith("up_blocks.")]
    assert layers == decoder[1:] and len(layers) >= 1


@pytest.mark.parametrize(
    ("key", "value"),
    [("feature_layers", ["up_blocks.9.resnets.0"]), ("attention_layers", ["mid_block.nonsense.attn1"])],
)
def test_unknown_injection_layers_are_a_one_line_error_listing_the_valid_ones(models, key, value):
    config = edit_config("ddim", **{key: value})
    record = invert(models, clip_latents(frames=2), config)
    with pytest.raises(VidinvError, match=f"edit.{key}") as err:
        pnp_edit(models, record, config)
    assert "\n" not in str(err.value)


def test_edit_command_writes_every_output_as_configured(tmp_path, capsys):
    from vidinv.io import read_video

    out = tmp_path / "run"
    args = [
        "video.num_frames=4",
        "video.height=64",
        "video.width=96",
        "video.stride=2",
        "inversion.steps=3",
        f"runtime.output_dir={out}",
    ]
    assert main(["--quiet", "edit", "configs/demo.yaml", *args]) == 0
    assert "edited 4 frames 64x96" in capsys.readouterr().out
    for name in (*EDIT_WRITES, "config.yaml"):
        assert (out / name).is_file(), name
    assert (out / "inversion" / "record.json").is_file()
    assert not list(out.rglob("*.partial*"))
    edited, side = read_video(out / "edited.mp4"), read_video(out / "side_by_side.mp4")
    assert edited.frames.shape == (4, 3, 64, 96) and edited.fps == 12.5  # 25 fps / stride 2
    assert side.frames.shape == (4, 3, 64, 192)
    assert load_config(out / "config.yaml") == load_config(REPO / "configs/demo.yaml", args)
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 4 and metrics["frame_calls"]["edit"] == 4 * (2 * 3 + 1 * round(0.8 * 3))
    assert set(metrics["temporal_consistency"]) >= {"warp_error_source", "warp_error_edited"}

    # a second run into the same folder is refused; with overwrite the record is reused
    assert main(["--quiet", "edit", "configs/demo.yaml", *args]) == 2
    assert main(["--quiet", "edit", "configs/demo.yaml", *args, "runtime.overwrite=true"]) == 0


def test_video_editor_api_edits_in_memory_without_touching_the_disk(tmp_path, monkeypatch):
    from vidinv import VideoEditor

    monkeypatch.chdir(tmp_path)  # anything written would land here
    editor = VideoEditor.from_pretrained(
        "tiny",
        inversion={"steps": 3},
        video={"num_frames": 2, "height": 64, "width": 64, "path": str(REPO / "samples/bikes.mp4")},
    )
    clip = editor.read()
    out = editor.edit(clip.frames, "a robot", source_prompt="a man")
    assert out.frames.shape == clip.frames.shape and out.frames.abs().max() <= 1
    assert out.record.source_prompt == "a man" and not out.record_reused
    again = editor.edit(clip.frames, "a robot", record=out.record)
    assert again.record_reused and torch.equal(again.latents, out.latents)
    assert list(tmp_path.iterdir()) == []


def test_chunked_edit_equals_the_whole_clip_edit(models):
    """unet_chunk splits frames; injection and cross-frame anchors must not notice."""
    config = edit_config("freeinv", prompt="a robot", guidance_scale=7.5)
    record = invert(models, clip_latents(frames=5), config)
    whole = pnp_edit(models, record, config).latents
    config.runtime.unet_chunk = 2
    chunked = pnp_edit(models, record, config).latents
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=0)


def test_ctrl_c_during_the_edit_exits_130_and_leaves_no_finished_looking_output(tmp_path, monkeypatch, capsys):
    from vidinv.editing.pnp import PnPEdit

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PnPEdit, "edit", interrupted)
    out = tmp_path / "run"
    args = ["video.num_frames=2", "video.height=64", "video.width=64", "inversion.steps=2", f"runtime.output_dir={out}"]
    assert main(["--quiet", "edit", "configs/demo.yaml", *args]) == 130
    assert "interrupted" in capsys.readouterr().err
    for name in ("edited.mp4", "side_by_side.mp4", "metrics.json"):
        assert not (out / name).exists()
    assert not list(out.rglob("*.partial*"))


@pytest.mark.parametrize("method", ["pnp", "tokenflow", "fatezero"])
def test_every_edit_method_runs_in_bf16(method):
    """Half precision (as on GPUs): the UNet and VAE in bf16, the samplers' latents in fp32."""
    from vidinv import VideoEditor

    editor = VideoEditor.from_pretrained(
        "tiny",
        model={"dtype": "bf16", "device": "cpu"},
        inversion={"steps": 2, "source_prompt": "a man"},
        edit={"method": method, "keyframe_stride": 2},
    )
    assert editor.models.unet.dtype == torch.bfloat16
    frames = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = editor.edit(frames, "a robot")
    assert out.frames.shape == frames.shape and torch.isfinite(out.frames).all()
    assert out.latents.dtype == torch.float32


def test_bad_injection_layers_fail_before_the_inversion(tmp_path):
    from vidinv import VideoEditor

    editor = VideoEditor.from_pretrained("tiny", inversion={"steps": 2}, edit={"feature_layers": ["nope"]})
    frames = torch.zeros(2, 3, 64, 64)
    with pytest.raises(VidinvError, match="edit.feature_layers"):
        editor.edit(frames, "a robot", record_dir=tmp_path / "inversion")
    assert not (tmp_path / "inversion").exists()
