"""`vidinv plan` on flow transformers (SD3, Flux): frame-calls equal the runs' counters (FlowEdit,
PnP), weights equal the loaded pipeline's modules, a saved folder plans like the built-in model."""

from __future__ import annotations

import pytest
import torch

from vidinv import VideoEditor
from vidinv.config import config_from_dict
from vidinv.models import load_models
from vidinv.planning import check_fits, param_bytes, plan_run

FRAMES, SIZE = 3, 64


def values(name: str, method: str, **edit) -> dict:
    return {
        "model": {"pretrained": name, "dtype": "fp32"},
        "video": {"num_frames": FRAMES, "height": SIZE, "width": SIZE},
        "inversion": {"method": "freeinv", "steps": 4, "source_prompt": "a red car", "guidance_scale": 2.0},
        "edit": {"method": method, "target_prompt": "a blue bus", "guidance_scale": 3.0} | edit,
    }


@pytest.fixture(scope="module", params=["tiny-sd3", "tiny-flux"])
def flow_models(request):
    return load_models(request.param, dtype="fp32", device="cpu")


@pytest.mark.parametrize(
    ("method", "edit"), [("pnp", {}), ("flowedit", {"flowedit": {"n_max": 3, "n_min": 1, "n_avg": 2}})]
)
@pytest.mark.slow
def test_planned_frame_calls_equal_the_runs_counts(flow_models, method, edit):
    config = values(flow_models.source, method, **edit)
    frames = torch.rand(FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = VideoEditor(config, models=flow_models).edit(frames)
    planned = plan_run(config_from_dict(config)).frame_calls
    assert planned == {"inversion": out.record.stats.frame_calls, "edit": out.stats.frame_calls}


def test_planned_weights_equal_the_pipelines_modules_and_a_saved_folder_plans_alike(flow_models, tmp_path):
    plan = plan_run(config_from_dict(values(flow_models.source, "pnp")))
    modules = {n: m for n, m in flow_models.pipeline.components.items() if isinstance(m, torch.nn.Module)}
    assert plan.weights == {name: param_bytes(module) for name, module in modules.items()}
    flow_models.save_pretrained(tmp_path / "saved")
    saved = check_fits(config_from_dict(values(str(tmp_path / "saved"), "pnp")))
    assert saved.weights == plan.weights and saved.frame_calls == plan.frame_calls
    assert saved.unet_activations > 0 and saved.vae_activations == plan.vae_activations


def test_a_video_models_vae_is_planned_in_fp32_as_it_is_loaded():
    """tiny-wan in bf16: the plan's weights equal the loaded modules' bytes, its causal VAE in fp32
    (as loading keeps it), the rest in bf16."""
    from vidinv.models import load_models

    models = load_models("tiny-wan", dtype="bf16", device="cpu")
    config = config_from_dict(
        {
            "model": {"pretrained": "tiny-wan", "dtype": "bf16", "device": "cpu"},
            "video": {"num_frames": 5, "height": 32, "width": 32},
            "inversion": {"method": "flow", "steps": 2, "source_prompt": "a"},
            "edit": {"method": "flowedit", "target_prompt": "b"},
        }
    )
    plan = plan_run(config)
    modules = {n: m for n, m in models.pipeline.components.items() if isinstance(m, torch.nn.Module)}
    assert next(models.vae.parameters()).dtype == torch.float32
    assert plan.weights == {name: param_bytes(module) for name, module in modules.items()}
