"""A denoiser that overflows in fp16 (activations beyond 65504) is caught where it happens: one line
naming the stage and the way out, not NaN latents decoded to black frames under a message that
blames the VAE (issue 29, item 6)."""

from __future__ import annotations

import pytest
import torch

from vidinv import VideoEditor
from vidinv.errors import VidinvError
from vidinv.models import load_models

FRAMES = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
CONFIG = {"inversion": {"method": "ddim", "steps": 2, "source_prompt": "a bike"}, "edit": {"method": "pnp"}}


def editor_with_unet_gain(gain: float, dtype: str = "fp16") -> VideoEditor:
    """The tiny model in `dtype` on the CPU with its UNet's first convolution scaled by `gain`."""
    models = load_models("tiny", dtype=dtype, device="cpu")
    with torch.no_grad():
        models.unet.conv_in.weight.mul_(gain)
    return VideoEditor(CONFIG, models=models)


def test_an_fp16_unet_overflow_stops_the_inversion_with_one_line():
    with pytest.raises(VidinvError) as caught:
        editor_with_unet_gain(1e6).edit(FRAMES, "a car")
    message = str(caught.value)
    assert message == (
        "the denoiser gave non-finite latents (inf/NaN) in the inversion; model.dtype=bf16 or fp32 avoids fp16's overflow"
    )


def test_the_same_gain_in_bf16_runs_to_finite_frames():
    """bf16 has fp32's range: the scaled UNet that overflows fp16 gives finite latents and frames."""
    out = editor_with_unet_gain(1e6, "bf16").edit(FRAMES, "a car")
    assert torch.isfinite(out.latents).all() and torch.isfinite(out.frames).all()


def test_non_finite_edit_latents_are_caught_after_the_edit():
    """An overflow that starts in the edit (a record inverted by a sound UNet) is named as the edit's."""
    editor = editor_with_unet_gain(1.0)
    record, _ = editor.invert(FRAMES)
    with torch.no_grad():
        editor.models.unet.conv_in.weight.mul_(1e6)
    with pytest.raises(VidinvError, match=r"non-finite latents \(inf/NaN\) in the edit"):
        editor.edit(FRAMES, "a car", record=record)
