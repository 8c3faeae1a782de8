"""Resumable inversion: an interrupted run's checkpoint is picked up by the next run with the same
config and clip, which then gives exactly the record an uninterrupted run gives."""

from __future__ import annotations

import pytest
import torch

from vidinv.config import config_from_dict
from vidinv.inversion import api
from vidinv.inversion.record import JSON_NAME, PROGRESS_NAME
from vidinv.inversion.resume import SUFFIX
from vidinv.inversion.step_file import StepFile
from vidinv.outputs import partial_name

STEPS = 6
RECORDS = ["memory", "disk"]  # runtime.record: a disk record is its own checkpoint


def config(method: str, checkpoint_seconds: float | None = 0.0, seed: int = 0, record: str = "memory"):
    return config_from_dict(
        {
            "model": {"frame_attention": "none"},
            "inversion": {"method": method, "steps": STEPS, "source_prompt": "a bike", "seed": seed},
            "runtime": {"checkpoint_seconds": checkpoint_seconds, "record": record},
        }
    )


def checkpoint_of(folder, record: str):
    """What an interrupted inversion leaves to resume from: a state file, or the partial record's progress."""
    return partial_name(folder) / PROGRESS_NAME if record == "disk" else folder.with_name(folder.name + SUFFIX)


def clip_latents():
    """Latents laid out as the VAE gives them (channels-last strides): the layout the UNet's
    convolutions round differently from a checkpoint's contiguous tensors."""
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return x0.to(memory_format=torch.channels_last)


class Interrupting:
    """The real denoiser, with Ctrl-C pressed during its call number `after + 1`."""

    def __init__(self, denoiser, after: int):
        self.denoiser, self.after, self.seen = denoiser, after, 0

    @property
    def frame_calls(self):
        return self.denoiser.frame_calls

    def __call__(self, z, t):
        if self.seen == self.after:
            raise KeyboardInterrupt
        self.seen += 1
        return self.denoiser(z, t)


def interrupt_after(monkeypatch, steps: int):
    for denoiser in (api.GuidedModel, api.FlowGuidedModel):  # UNet and flow models
        real = denoiser.for_prompt
        monkeypatch.setattr(denoiser, "for_prompt", lambda *a, real=real, **k: Interrupting(real(*a, **k), steps))


def interrupted_inversion(models, x0, cfg, folder, monkeypatch, calls: int) -> None:
    """`invert_or_load` with Ctrl-C pressed during UNet call number `calls + 1`."""
    with monkeypatch.context() as patch:
        interrupt_after(patch, calls)
        with pytest.raises(KeyboardInterrupt):
            api.invert_or_load(models, x0, cfg, folder)


def values(x) -> torch.Tensor:
    """A record tensor's values, whether it is held in memory or read from its file."""
    return x.tensor() if isinstance(x, StepFile) else x


@pytest.mark.parametrize("record", RECORDS)
@pytest.mark.parametrize("method", ["ddim", "freeinv", "mbdi", "ddpm_ef"])
@pytest.mark.slow
def test_an_interrupted_inversion_of_vae_laid_out_latents_resumes_to_the_bit_identical_record(
    tiny_models, tmp_path, monkeypatch, method, record
):
    x0 = clip_latents()
    whole, _ = api.invert_or_load(tiny_models, x0, config(method, None), tmp_path / "whole")

    folder = tmp_path / "run" / "inversion"
    calls_per_step = 4 if method == "mbdi" else 1  # MBDI: one call per transform of the rot90 group
    interrupted_inversion(tiny_models, x0, config(method, record=record), folder, monkeypatch, 4 * calls_per_step)
    checkpoint = checkpoint_of(folder, record)
    assert checkpoint.is_file() and not (folder / JSON_NAME).exists()

    resumed, reused = api.invert_or_load(tiny_models, x0, config(method, record=record), folder)
    assert not reused and resumed.stats.resumed_from_step == 4
    assert resumed.on_disk == (record == "disk")
    assert torch.equal(values(resumed.latents), whole.latents)
    if method == "ddpm_ef":
        assert torch.equal(values(resumed.noise_maps), whole.noise_maps)
    assert not checkpoint.exists() and not partial_name(folder).exists()


@pytest.mark.parametrize("record", RECORDS)
def test_a_checkpoint_of_another_config_is_not_resumed(tiny_models, tmp_path, monkeypatch, record):
    x0, folder = clip_latents(), tmp_path / "inversion"
    interrupted_inversion(tiny_models, x0, config("freeinv", seed=0, record=record), folder, monkeypatch, 3)
    assert checkpoint_of(folder, record).is_file()
    resumed, _ = api.invert_or_load(tiny_models, x0, config("freeinv", seed=1, record=record), folder)
    assert resumed.stats.resumed_from_step is None
    whole, _ = api.invert_or_load(tiny_models, x0, config("freeinv", None, seed=1), tmp_path / "whole")
    assert torch.equal(values(resumed.latents), whole.latents)


@pytest.mark.parametrize("record", RECORDS)
def test_an_inversion_that_cannot_resume_leaves_nothing_when_interrupted(tiny_models, tmp_path, monkeypatch, record):
    x0, folder = clip_latents(), tmp_path / "inversion"
    interrupted_inversion(tiny_models, x0, config("ddim", None, record=record), folder, monkeypatch, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("record", RECORDS)
@pytest.mark.slow
def test_the_edit_command_resumes_an_interrupted_inversion_in_the_same_folder(tmp_path, monkeypatch, capsys, record):
    import json

    from vidinv.cli import main

    out = tmp_path / "run"
    args = ["video.num_frames=2", "video.height=64", "video.width=64", "inversion.steps=4"]
    args += ["runtime.checkpoint_seconds=0", f"runtime.output_dir={out}", f"runtime.record={record}"]
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        assert main(["--quiet", "edit", "configs/demo.yaml", *args]) == 130
    assert capsys.readouterr().err == "vidinv: interrupted\n"  # a KeyboardInterrupt inside a step
    assert main(["--quiet", "edit", "configs/demo.yaml", *args]) == 0  # no overwrite needed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frame_calls"]["inversion"] == 2 * 2  # the 2 remaining steps x 2 frames
