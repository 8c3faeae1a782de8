"""Every inversion method x every edit method runs on SDXL (tiny, with its added conditioning):
finite edits whose UNet frame-calls are the planner's formulas', and PnP's exact property (issue 13, item 3)."""

from __future__ import annotations

import pytest
import torch

from vidinv import VideoEditor
from vidinv.attention import remove_frame_attention
from vidinv.config import config_from_dict
from vidinv.inversion import api
from vidinv.models import load_models
from vidinv.planning import frame_calls

FRAMES, SIZE, PROMPT = 2, 64, "a bike"


@pytest.fixture(scope="module")
def sdxl():
    models = load_models("tiny-sdxl", dtype="fp32", device="cpu")
    yield models
    remove_frame_attention(models.unet)


def values(inversion: str, edit: str, **edit_options) -> dict:
    guidance = 3.5 if inversion == "ddpm_ef" else 1.0  # the inversion's own guidance: a pure regeneration
    return {
        "model": {"pretrained": "tiny-sdxl"},
        "video": {"num_frames": FRAMES, "height": SIZE, "width": SIZE},
        "inversion": {"method": inversion, "steps": 2, "source_prompt": PROMPT},
        "edit": {
            "method": edit,
            "target_prompt": PROMPT,
            "guidance_scale": guidance,
            "tokenflow": {"keyframe_stride": 2},
        }
        | edit_options,
    }


@pytest.mark.parametrize("edit", ["pnp", "tokenflow", "fatezero"])
@pytest.mark.parametrize("inversion", ["ddim", "freeinv", "mbdi", "ddpm_ef"])
@pytest.mark.slow
def test_every_inversion_and_edit_method_runs_on_sdxl_as_planned(sdxl, inversion, edit):
    config = values(inversion, edit)
    frames = torch.rand(FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = VideoEditor(config, models=sdxl).edit(frames)
    assert out.latents.shape == (FRAMES, 4, SIZE // 8, SIZE // 8) and torch.isfinite(out.latents).all()
    planned = frame_calls(config_from_dict(config), "edit", FRAMES, (SIZE // 8, SIZE // 8))  # vidinv plan's formulas
    assert planned == {"inversion": out.record.stats.frame_calls, "edit": out.stats.frame_calls}
    if edit != "pnp":
        return
    # PnP with the source prompt and guidance regenerates the source: with full injection the edit
    # IS the reconstruction (DDIM family); ddpm_ef's regeneration from T_skip without injection is x0
    if inversion == "ddpm_ef":
        config["edit"] |= {"pnp": {"inject_features": 0.0, "inject_attention": 0.0}}
        expected = VideoEditor(config, models=sdxl).encode(frames)
    else:
        config["edit"] |= {"pnp": {"inject_features": 1.0, "inject_attention": 1.0}}
        expected = api.reconstruct(sdxl, out.record, config_from_dict(config))
    edited = VideoEditor(config, models=sdxl).edit(frames, record=out.record).latents
    torch.testing.assert_close(edited, expected, atol=1e-4, rtol=0)
