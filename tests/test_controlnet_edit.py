"""ControlNet through the edit (issue 13, item 4): `edit.control: canny` on the tiny SD with a saved
tiny ControlNet; at `edit.controlnet_scale=0` every edit method gives the edit without ControlNet
byte for byte (a ControlNet at scale 0 is not run), at scale 1 another one. `edit.control: depth`
with no depth estimator at hand is a one-line exit 2 through the CLI, and hub ids (the depth
estimator, a ControlNet) fail at once with one line when the hub cannot be reached."""

from __future__ import annotations

import dataclasses
import time

import pytest

from tests.conftest import REPO, moving_square
from tests.test_models import assert_one_line_error
from vidinv import VideoEditor
from vidinv.cli import main
from vidinv.config import config_from_dict
from vidinv.editor import load_models_for
from vidinv.errors import VidinvError
from vidinv.models import load_models
from vidinv.models.controlnet import depth_images


def edit_config(method: str, controlnet=None, scale: float = 1.0) -> dict:
    """A real edit (another prompt, CFG 5) of 2 frames in 3 steps; with `controlnet`, canny at `scale`."""
    edit = {"method": method, "target_prompt": "a robot", "guidance_scale": 5.0, "keyframe_stride": 2}
    model = {"pretrained": "tiny", "frame_attention": "sparse_causal", "dtype": "fp32", "device": "cpu"}
    if controlnet is not None:
        edit |= {"control": "canny", "controlnet_scale": scale}
        model["controlnet"] = str(controlnet)
    return {
        "model": model,
        "inversion": {"method": "ddim", "steps": 3, "source_prompt": "a square"},
        "edit": edit,
    }


@pytest.fixture(scope="module")
def controlled(controlnet_folder):
    """The tiny SD with the ControlNet loaded and sparse-causal attention installed."""
    return load_models_for(config_from_dict(edit_config("pnp", controlnet_folder)))


@pytest.mark.parametrize("method", ["pnp", "tokenflow", "fatezero"])
def test_controlnet_scale_zero_edit_is_the_edit_without_controlnet_byte_for_byte(controlled, controlnet_folder, method):
    frames = moving_square(2, 64)
    plain = VideoEditor(edit_config(method), models=dataclasses.replace(controlled, controlnets=[]))
    record, _ = plain.invert(frames)  # one record for all three: only the edit differs
    without = plain.edit(frames, record=record).latents
    zero = VideoEditor(edit_config(method, controlnet_folder, 0.0), models=controlled).edit(frames, record=record)
    one = VideoEditor(edit_config(method, controlnet_folder, 1.0), models=controlled).edit(frames, record=record)
    assert zero.latents.numpy().tobytes() == without.numpy().tobytes()
    assert (one.latents - without).abs().max() > 1e-3


def test_depth_control_without_a_depth_estimator_is_a_one_line_exit_2(controlnet_folder, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    args = [
        f"video.path={REPO / 'samples/bikes.mp4'}",
        "video.num_frames=2",
        "video.height=64",
        "video.width=64",
        "inversion.steps=2",
        f"model.controlnet={controlnet_folder}",
        "edit.control=depth",
        f"runtime.output_dir={tmp_path / 'run'}",
    ]
    assert main(["--quiet", "edit", str(REPO / "configs/demo.yaml"), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "edit.control" in lines[0] and "depth" in lines[0]
    assert not (tmp_path / "run" / "inversion" / "record.json").exists()  # refused before the inversion


@pytest.mark.parametrize(
    ("load", "key"),
    [
        (lambda: depth_images(moving_square(1, 64), estimator="vidinv-test/no-depth-model"), "edit.control"),
        (lambda: load_models("tiny", device="cpu", controlnet="vidinv-test/no-controlnet"), "model.controlnet"),
    ],
)
def test_hub_ids_with_the_hub_unreachable_fail_at_once_with_one_line(monkeypatch, capsys, load, key):
    """Not the hub client's minutes of retries (97 s for the depth estimator before): the hub probe
    answers, and the line says what to do."""
    import huggingface_hub.constants

    from vidinv.models import hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_hub_unreachable", lambda: "the hub cannot be reached (test)")
    started = time.perf_counter()
    with pytest.raises(VidinvError) as err:
        load()
    assert time.perf_counter() - started < 10
    assert_one_line_error(err, key)
    assert "not in the hub cache" in str(err.value) and "HF_HUB_OFFLINE=1" in str(err.value)
    assert "Retrying" not in capsys.readouterr().err
