"""configs/tiny/: one config per model family on its built-in tiny model (SD 1.x, SD 2.x, SDXL, SD3,
Flux, Wan), each the twin of a configs/*.yaml; each plans and runs as shipped (`vidinv plan FILE`,
`vidinv edit FILE runtime.output_dir=...`), and a run counts the frame-calls its plan predicted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidinv.cli import main
from vidinv.config import load_config

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIGS = sorted((REPO / "configs" / "tiny").glob("*.yaml"))
NAMES = [path.name for path in TINY_CONFIGS]


@pytest.fixture
def in_repo(monkeypatch):
    """Run from the repository root, as the configs' `video.path: samples/bikes.mp4` expects."""
    monkeypatch.chdir(REPO)


def test_every_family_has_a_tiny_config_twin_of_a_shipped_config():
    from vidinv.models.tiny_configs import TINY_PIPELINES

    models = {load_config(path).model.pretrained for path in TINY_CONFIGS}
    assert models == set(TINY_PIPELINES)
    for path in TINY_CONFIGS:
        assert (REPO / "configs" / path.name).is_file(), f"configs/tiny/{path.name} twins no configs/{path.name}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.slow
def test_each_tiny_config_plans_as_shipped(capsys, in_repo, name):
    assert main(["plan", f"configs/tiny/{name}"]) == 0
    assert "frame-calls" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_each_tiny_config_runs_as_shipped_making_the_planned_frame_calls(in_repo, tmp_path, name):
    from vidinv.planning import plan_run

    out = tmp_path / "run"
    assert main(["-q", "edit", f"configs/tiny/{name}", f"runtime.output_dir={out}"]) == 0
    for video in ("edited.mp4", "source.mp4", "side_by_side.mp4", "metrics.json", "config.yaml"):
        assert (out / video).is_file(), video
    metrics = json.loads((out / "metrics.json").read_text())
    config = load_config(REPO / "configs" / "tiny" / name)
    assert (metrics["frames"], metrics["height"], metrics["width"]) == (
        config.video.num_frames,
        config.video.height,
        config.video.width,
    )
    assert metrics["frame_calls"] == plan_run(config).frame_calls
