"""`vidinv invert` and `vidinv reconstruct` in-process on a tiny excerpt of the sample clip."""

from __future__ import annotations

import json
import logging

import pytest

from tests.conftest import REPO
from vidinv.cli import main


def overrides(out, *extra):
    return [
        "model.device=cpu",
        "video.num_frames=3",
        "video.height=64",
        "video.width=64",
        "inversion.steps=4",
        f"runtime.output_dir={out}",
        *extra,
    ]


@pytest.mark.slow
def test_invert_then_reconstruct_reuses_the_record_and_recomputes_on_change(tmp_path, caplog, capsys):
    config = str(REPO / "configs" / "demo.yaml")
    out = tmp_path / "run"
    assert main(["-q", "invert", config, *overrides(out, "inversion.method=freeinv")]) == 0
    assert (out / "inversion" / "record.json").is_file() and (out / "inversion" / "tensors.safetensors").is_file()
    assert not (out / "inversion.partial").exists()
    assert "freeinv inversion of 3 frames" in capsys.readouterr().out

    with caplog.at_level(logging.INFO, logger="vidinv"):
        assert main(["reconstruct", config, *overrides(out, "inversion.method=freeinv")]) == 0
    assert "record reused" in caplog.text
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "reconstruction.mp4").stat().st_size > 0
    assert metrics["record_reused"] is True and metrics["method"] == "freeinv"
    assert metrics["frame_calls"] == {"inversion": 0, "reconstruction": 3 * 4}
    for key in ("psnr_latent_db", "psnr_db", "psnr_input_db"):
        assert isinstance(metrics[key], float)
    assert len(metrics["transforms"]) == 4

    # the same files again need overwrite; a changed config recomputes the record
    assert main(["-q", "reconstruct", config, *overrides(out, "inversion.method=freeinv")]) == 2
    assert "already has reconstruction.mp4" in capsys.readouterr().err
    args = overrides(out, "inversion.method=ddpm_ef", "edit.skip=1", "runtime.overwrite=true")
    assert main(["-q", "reconstruct", config, *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["record_reused"] is False and metrics["method"] == "ddpm_ef" and metrics["start_step"] == 1
    assert metrics["psnr_latent_db"] > 100  # edit-friendly DDPM regenerates exactly
    assert json.loads((out / "inversion" / "record.json").read_text())["method"] == "ddpm_ef"


@pytest.mark.parametrize("command", ["invert", "reconstruct", "edit"])
@pytest.mark.slow
def test_each_command_is_planned_as_itself_before_loading(command, tmp_path, monkeypatch):
    """The check before loading plans the command that runs (reconstruct was planned as invert: the
    wrong host baseline, no reconstruction calls), with the real planner: its plan is `vidinv plan
    --for COMMAND`'s, and the frame-calls it predicts are those the run counts."""
    import vidinv.jobs.common as common
    from vidinv.config import load_config
    from vidinv.planning import plan_run

    planned = []
    real = common.check_fits
    monkeypatch.setattr(
        common,
        "check_fits",
        lambda config, cmd, record_dir: planned.append(real(config, cmd, record_dir)) or planned[-1],
    )
    argv = [
        "video.num_frames=2",
        "video.height=32",
        "video.width=32",
        "inversion.steps=2",
        f"runtime.output_dir={tmp_path}",
    ]
    assert main(["--quiet", command, "configs/demo.yaml", *argv]) == 0
    assert [plan.command for plan in planned] == [command]
    assert planned[0] == plan_run(load_config("configs/demo.yaml", argv), command)
    if command != "invert":  # invert writes no metrics.json
        counted = json.loads((tmp_path / "metrics.json").read_text())["frame_calls"]
        assert planned[0].frame_calls == counted
