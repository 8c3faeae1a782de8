"""The planner (vidinv.planning): its frame-calls and FateZero store equal what a run does, its weights
equal the loaded model's, and a run that cannot fit is refused before anything is loaded."""

from __future__ import annotations

import pytest
import torch

from vidinv import VideoEditor
from vidinv.cli import main
from vidinv.config import config_from_dict
from vidinv.errors import VidinvError
from vidinv.planning import check_fits, param_bytes, plan_run

FRAMES, SIZE = 3, 32


def plan_config(method: str, inversion: str = "freeinv", guidance: float | None = None) -> dict:
    return {
        "video": {"num_frames": FRAMES, "height": SIZE, "width": SIZE},
        "inversion": {"method": inversion, "steps": 4, "source_prompt": "a bike", "guidance_scale": guidance},
        "edit": {"method": method, "target_prompt": "a car", "tokenflow": {"keyframe_stride": 2}},
    }


def run_edit(values: dict):
    editor = VideoEditor(values, progress=False)
    return editor.edit(editor.read().frames, values["edit"]["target_prompt"])


@pytest.mark.parametrize(
    "method, inversion, guidance",
    [("pnp", "freeinv", None), ("tokenflow", "ddim", 2.0), ("fatezero", "mbdi", None), ("pnp", "ddpm_ef", None)],
)
@pytest.mark.slow
def test_planned_frame_calls_equal_the_runs_counts(method, inversion, guidance):
    values = plan_config(method, inversion, guidance)
    out = run_edit(values)
    plan = plan_run(config_from_dict(values))
    assert plan.frame_calls == {"inversion": out.record.stats.frame_calls, "edit": out.stats.frame_calls}


def test_planned_fatezero_store_equals_the_bytes_the_run_stores():
    values = plan_config("fatezero")
    out = run_edit(values)
    assert plan_run(config_from_dict(values)).store_bytes == out.stats.extra["store_bytes"]


def test_planned_weights_equal_the_loaded_models_parameter_bytes(tiny_models):
    plan = plan_run(config_from_dict(plan_config("pnp")))
    assert plan.weights == {name: param_bytes(getattr(tiny_models, name)) for name in plan.weights}


def test_host_memory_grows_with_the_clip_and_the_store():
    short, long = (plan_run(config_from_dict({"video": {"num_frames": n, "height": SIZE}})) for n in (4, 16))
    assert long.host_parts["record"] == 4 * short.host_parts["record"] and long.host_peak > short.host_peak
    store = plan_run(config_from_dict({**plan_config("fatezero"), "video": {"num_frames": 4, "height": SIZE}}))
    assert store.host_parts["store"] == store.store_bytes > 0


def test_check_fits_refuses_a_clip_larger_than_the_machine_in_one_line():
    with pytest.raises(VidinvError, match=r"^plan: predicted peak host memory [\d,]+ MB exceeds") as err:
        check_fits(config_from_dict({"video": {"num_frames": 10000, "height": 8192, "width": 8192}}))
    assert "\n" not in str(err.value)


def test_vidinv_plan_prints_the_prediction(capsys):
    assert main(["plan", "configs/demo.yaml", "edit.method=fatezero", "video.num_frames=4"]) == 0
    out = capsys.readouterr().out
    for line in ("UNet frame-calls", "peak device memory", "peak host memory", "FateZero store"):
        assert line in out


@pytest.mark.slow
def test_vidinv_plan_predicts_a_gpu_run_on_a_machine_without_one(capsys):
    """model.device=cuda plans from the shapes alone, CUDA or not: the weights leave the host's share."""
    values = {"model": {"device": "cuda", "dtype": "fp16"}, "video": {"num_frames": FRAMES, "height": SIZE}}
    on_gpu = plan_run(config_from_dict(values))
    on_cpu = plan_run(config_from_dict({**values, "model": {"device": "cpu", "dtype": "fp16"}}))
    assert on_gpu.device.startswith("cuda") and on_gpu.host_parts["weights"] == 0
    assert on_cpu.host_parts["weights"] == sum(on_cpu.weights.values()) > 0
    assert main(["plan", "configs/demo.yaml", "model.device=cuda", "video.num_frames=4"]) == 0
    assert "on cuda" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_vidinv_edit_on_a_missing_gpu_exits_2_in_one_line_before_writing(tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert main(["edit", "configs/demo.yaml", "model.device=cuda", f"runtime.output_dir={out_dir}"]) == 2
    assert capsys.readouterr().err.strip().endswith("CUDA is not available here") and not out_dir.exists()


def test_vidinv_edit_that_cannot_fit_exits_2_before_writing(tmp_path, capsys):
    out_dir = tmp_path / "run"
    big = ["video.num_frames=10000", "video.height=8192", "video.width=8192"]
    assert main(["edit", "configs/demo.yaml", *big, f"runtime.output_dir={out_dir}"]) == 2
    assert "predicted peak" in capsys.readouterr().err and not out_dir.exists()


@pytest.mark.parametrize("name", ["tiny-sd2", "tiny-sdxl"])
@pytest.mark.slow
def test_planned_weights_of_sd2_and_sdxl_equal_the_loaded_components(name):
    from vidinv.models import load_models

    models = load_models(name, device="cpu")
    plan = plan_run(config_from_dict({**plan_config("pnp"), "model": {"pretrained": name}}))
    expected = {"unet", "vae", "text_encoder"} | ({"text_encoder_2"} if name == "tiny-sdxl" else set())
    assert set(plan.weights) == expected
    assert plan.weights == {part: param_bytes(getattr(models, part)) for part in expected}


def test_planned_sdxl_frame_calls_equal_the_runs_counts():
    values = {**plan_config("pnp"), "model": {"pretrained": "tiny-sdxl"}}
    out = run_edit(values)
    plan = plan_run(config_from_dict(values))
    assert plan.frame_calls == {"inversion": out.record.stats.frame_calls, "edit": out.stats.frame_calls}
    assert plan.unet_activations > 0


def test_planned_controlnet_weights_equal_the_loaded_controlnets(tiny_models, tmp_path):
    from vidinv.models.controlnet import load_controlnets
    from vidinv.models.tiny import build_tiny_controlnet

    build_tiny_controlnet(tiny_models.unet).save_pretrained(tmp_path / "cn")
    values = {**plan_config("pnp"), "model": {"controlnet": [str(tmp_path / "cn")] * 2}}
    values["edit"] |= {"control": ["canny", "canny"]}
    plan = plan_run(config_from_dict(values))
    loaded = load_controlnets([str(tmp_path / "cn")], torch.float32)[0]
    assert plan.weights["controlnet"] == 2 * param_bytes(loaded)
