"""ControlNet through the edit (issue 13, item 4): at scale 0 every edit method's result is the
edit without ControlNet byte for byte; depth conditions come from a transformers depth estimator
(a tiny one written here), and a missing estimator is a one-line error before any work."""

from __future__ import annotations

import time

import pytest
import torch

from tests.conftest import moving_square
from tests.test_models import assert_one_line_error
from vidinv import VideoEditor
from vidinv.cli import main
from vidinv.errors import VidinvError
from vidinv.models import load_models
from vidinv.models.controlnet import load_depth_estimator
from vidinv.models.tiny import write_tiny_depth_estimator

FRAMES, SIZE = 3, 32


@pytest.fixture(scope="module")
def frames():
    """Moving bright squares (edges for Canny), in [-1, 1]."""
    return moving_square(FRAMES, SIZE)


def edit(models, frames, method: str, controlnet=None, **edit_options) -> torch.Tensor:
    config = {
        "model": {"controlnet": None if controlnet is None else str(controlnet)},
        "video": {"num_frames": FRAMES, "height": SIZE, "width": SIZE},
        "inversion": {"steps": 3, "source_prompt": "a square", "control": edit_options.pop("inversion_control", False)},
        "edit": {"method": method, "target_prompt": "a red square", "keyframe_stride": 2, **edit_options},
    }
    return VideoEditor(config, models=models).edit(frames).latents


@pytest.mark.parametrize("method", ["pnp", "tokenflow", "fatezero"])
@pytest.mark.slow
def test_scale_zero_edit_is_the_edit_without_controlnet_byte_for_byte(controlnet_folder, frames, method):
    plain = edit(load_models("tiny", device="cpu"), frames, method)
    controlled = load_models("tiny", device="cpu", controlnet=str(controlnet_folder))
    for inversion_control in (False, True):
        zero = edit(
            controlled, frames, method, controlnet_folder, control="canny", controlnet_scale=0.0,
            inversion_control=inversion_control,
        )  # fmt: skip
        assert zero.numpy().tobytes() == plain.numpy().tobytes()
    one = edit(controlled, frames, method, controlnet_folder, control="canny", controlnet_scale=1.0)
    assert (one - plain).abs().max() > 1e-3  # the ControlNet acts at scale 1


def test_depth_condition_from_a_local_estimator_edits_through_the_cli(controlnet_folder, tmp_path, capsys):
    estimator = write_tiny_depth_estimator(tmp_path / "dpt")
    out = tmp_path / "run"
    args = [
        "--quiet", "edit", "configs/controlnet_edit.yaml", "model.pretrained=tiny", f"model.controlnet={controlnet_folder}",
        "edit.control=depth", f"edit.depth_estimator={estimator}", f"video.num_frames={FRAMES}",
        f"video.height={SIZE * 2}", f"video.width={SIZE * 2}", "inversion.steps=2", f"runtime.output_dir={out}",
    ]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert (out / "edited.mp4").stat().st_size > 0


def test_depth_without_an_estimator_is_one_line_before_any_output(controlnet_folder, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "run"
    args = [
        "--quiet", "edit", "configs/controlnet_edit.yaml", "model.pretrained=tiny", f"model.controlnet={controlnet_folder}",
        "edit.control=depth", "edit.depth_estimator=nobody/no-depth-model", f"video.num_frames={FRAMES}",
        "inversion.steps=2", f"runtime.output_dir={out}",
    ]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "edit.depth_estimator" in err[0] and "nobody/no-depth-model" in err[0]
    assert not (out / "edited.mp4").exists() and not (out / "inversion").exists()


@pytest.mark.parametrize(
    ("load", "key"),
    [
        (lambda: load_depth_estimator("vidinv-test/no-depth-model"), "edit.depth_estimator"),
        (lambda: load_models("tiny", device="cpu", controlnet="vidinv-test/no-controlnet"), "model.controlnet"),
    ],
)
def test_hub_ids_with_the_hub_unreachable_fail_at_once_with_one_line(monkeypatch, capsys, load, key):
    """A depth estimator's or a ControlNet's hub id with the hub down and nothing cached: the hub probe
    answers in one line, not the hub client's minutes of retries (97 s for the depth estimator here)."""
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


def test_scale_zero_and_no_controlnet_write_the_same_files(controlnet_folder, tmp_path):
    """At file level too: `vidinv edit` with a ControlNet at scale 0 and without one write videos of
    one md5 each (the tensors are equal; the encoder adds nothing of its own)."""
    from tests.test_reproducible import videos_md5

    common = [
        "--quiet", "edit", "configs/demo.yaml", f"video.num_frames={FRAMES}", f"video.height={SIZE * 2}",
        f"video.width={SIZE * 2}", "inversion.steps=2",
    ]  # fmt: skip
    assert main([*common, f"runtime.output_dir={tmp_path}/plain"]) == 0
    controlled = [f"model.controlnet={controlnet_folder}", "edit.control=canny", "edit.controlnet_scale=0"]
    assert main([*common, *controlled, f"runtime.output_dir={tmp_path}/zero"]) == 0
    assert videos_md5(tmp_path / "zero") == videos_md5(tmp_path / "plain")
