"""FlowEdit on tiny SD3 / Flux: the identity edit, the steps it spends, errors, and the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch

from vidinv.cli import main
from vidinv.editor import VideoEditor
from vidinv.errors import VidinvError
from vidinv.models import load_models
from vidinv.models.tiny_flow import tiny_flow_pipeline

FRAMES = 3


@pytest.fixture(scope="module", params=["tiny-sd3", "tiny-flux", "tiny-wan", "tiny-ltx", "tiny-hunyuan"])
def flow_models(request):
    return load_models(request.param, dtype="fp32", device="cpu")


def editor(models, *, method="freeinv", steps=6, **flowedit):
    config = {
        "model": {"pretrained": models.source, "dtype": "fp32", "device": "cpu", "frame_attention": "sparse_causal"},
        "inversion": {"method": method, "steps": steps, "source_prompt": "a red car"},
        "edit": {"method": "flowedit", "flowedit": {"source_guidance": 3.0, "target_guidance": 3.0, **flowedit}},
        "runtime": {"unet_chunk": 2},
    }
    from vidinv.attention import install_from_config

    ed = VideoEditor(config, models=models)
    install_from_config(models.transformer, ed.config.model)
    return ed


def source_latents(seed: int = 0) -> torch.Tensor:
    return torch.randn(FRAMES, 16, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", ["flow", "freeinv"])
def test_the_source_prompt_as_target_returns_the_source_latents_exactly(flow_models, method):
    """Equal prompts and guidance: v_tar - v_src is zero on every step (FreeInv transforms and
    cross-frame attention included), so FlowEdit leaves x_src as it is."""
    x_src = source_latents()
    out = editor(flow_models, method=method).edit_latents(x_src, "a red car")
    assert torch.equal(out.latents, x_src)
    assert out.stats.extra["transforms"] != ["id"] * len(out.stats.extra["transforms"]) or method == "flow"


def test_an_edit_spends_n_max_steps_of_both_branches_and_n_min_of_the_target(flow_models):
    x_src = source_latents(1)
    rows = 1 if flow_models.family.guidance_embedded else 2  # SD3, Wan: CFG rows; Flux: embedded guidance
    out = editor(flow_models, n_max=4).edit_latents(x_src, "a blue bus")
    assert not torch.equal(out.latents, x_src) and torch.isfinite(out.latents).all()
    assert out.stats.frame_calls == 4 * 2 * rows * FRAMES and out.record.stats.frame_calls == 0
    out = editor(flow_models, n_max=4, n_min=1, n_avg=2).edit_latents(x_src, "a blue bus")
    assert out.stats.frame_calls == (3 * 2 * 2 * rows + 1 * rows) * FRAMES


def test_flowedit_refuses_bad_settings_and_non_flow_models_in_one_line(flow_models, tiny_models):
    with pytest.raises(VidinvError, match="n_max") as err:
        editor(flow_models, n_max=7).edit_latents(source_latents(), "a blue bus")
    assert "\n" not in str(err.value)
    tokenflow = VideoEditor({"edit": {"method": "tokenflow"}, "model": {"device": "cpu"}}, models=flow_models)
    with pytest.raises(VidinvError, match="tokenflow runs on (UNet|frame) models"):
        tokenflow.edit_latents(source_latents(), "a blue bus")
    sd = VideoEditor({"edit": {"method": "flowedit"}, "model": {"device": "cpu"}}, models=tiny_models)
    with pytest.raises(VidinvError, match="needs a flow-matching model"):
        sd.edit_latents(torch.zeros(1, 4, 8, 8), "a blue bus")


def test_edit_command_runs_flowedit_on_a_tiny_sd3_folder(tmp_path, capsys):
    from vidinv.io import read_video

    tiny_flow_pipeline("tiny-sd3").save_pretrained(tmp_path / "sd3")
    out = tmp_path / "run"
    args = [
        f"model.pretrained={tmp_path / 'sd3'}",
        "model.dtype=fp32",
        "model.device=cpu",
        "video.num_frames=2",
        "video.height=32",
        "video.width=48",
        "inversion.steps=3",
        "edit.flowedit.n_max=2",
        f"runtime.output_dir={out}",
    ]
    assert main(["--quiet", "edit", "configs/sd3_flowedit.yaml", *args]) == 0
    assert "edited 2 frames 32x48 (inversion-free; flowedit edit" in capsys.readouterr().out  # not "none inversion"
    edited = read_video(out / "edited.mp4")
    assert edited.frames.shape == (2, 3, 32, 48)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["edit"]["method"] == "flowedit" and metrics["frame_calls"] == {"inversion": 0, "edit": 2 * 2 * 2 * 2}
