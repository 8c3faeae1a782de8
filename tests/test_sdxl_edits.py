"""TokenFlow's and FateZero's exact properties on the tiny SDXL, for every inversion method, through
`VideoEditor` (issue 13, item 3; tests/test_sdxl_methods.py runs every combination and checks PnP's).

Two 32x32 frames (4x4 latents: the tiny SDXL UNet's smallest, two downsamplings), 2 steps, the
target prompt equal to the source prompt and guidance 1 in the inversion and the edit:

- tokenflow (every frame a keyframe, `full` attention, full injection): the edit is the
  reconstruction of the record, the correspondence field being the identity;
- fatezero (full replacement): with maps stored during the inversion (fp32) the edit equals the
  edit that recomputes them in the edit (the maps are a pure function of the record);
and for ddpm_ef, whose regeneration is exact, both give the source latents back.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import moving_square
from vidinv import VideoEditor
from vidinv.config import config_from_dict
from vidinv.editor import load_models_for
from vidinv.inversion import reconstruct

PROMPT = "a red bike"
INVERSIONS = ["ddim", "freeinv", "mbdi", "ddpm_ef"]
EDITS = ["tokenflow", "fatezero"]
EDIT_SETTINGS = {
    "tokenflow": {"pnp": {"inject_features": 1.0, "inject_attention": 1.0}, "tokenflow": {"keyframe_stride": 1}},
    "fatezero": {
        "fatezero": {"self_attn_steps": 1.0, "cross_attn_steps": 1.0, "store": "memory", "store_dtype": "fp32"}
    },
}
ATOL = 1e-4  # fp32 rounding through 2 steps (the SD tests' tolerance for the same properties)


def sdxl_config(inversion: str = "ddim", edit: str = "tokenflow", **edit_changes) -> dict:
    return {
        "model": {"pretrained": "tiny-sdxl", "frame_attention": "full", "dtype": "fp32", "device": "cpu"},
        "inversion": {"method": inversion, "steps": 2, "source_prompt": PROMPT, "guidance_scale": 1.0},
        "edit": {"method": edit, "target_prompt": PROMPT, "guidance_scale": 1.0, "skip": 0}
        | EDIT_SETTINGS[edit]
        | edit_changes,
        "runtime": {"unet_chunk": 0, "vae_chunk": 0},
    }


@pytest.fixture(scope="module")
def sdxl_full():
    """The tiny SDXL with `full` frame attention installed, as the editor loads it (one for all combinations)."""
    return load_models_for(config_from_dict(sdxl_config()))


@pytest.fixture(scope="module")
def frames():
    return moving_square(2, 32)


@pytest.mark.parametrize("edit", EDITS)
@pytest.mark.parametrize("inversion", INVERSIONS)
@pytest.mark.slow
def test_tokenflow_and_fatezero_on_sdxl_keep_their_exact_property(sdxl_full, frames, inversion, edit):
    editor = VideoEditor(sdxl_config(inversion, edit), models=sdxl_full)
    out = editor.edit(frames)
    assert out.frames.shape == frames.shape and out.frames.isfinite().all()
    assert out.latents.shape == (2, 4, 4, 4) and out.latents.isfinite().all()
    if edit == "fatezero":
        assert out.stats.extra["store_origin"] == "inversion"
        recomputed = VideoEditor(
            sdxl_config(inversion, edit, fatezero={**EDIT_SETTINGS[edit]["fatezero"], "store": "recompute"}),
            models=sdxl_full,
        )
        expected = recomputed.edit_latents(None, record=out.record).latents
    else:
        expected = reconstruct(sdxl_full, out.record, editor.config)
    torch.testing.assert_close(out.latents, expected, atol=ATOL, rtol=0)
    if inversion == "ddpm_ef":
        torch.testing.assert_close(out.latents, out.record.latents[-1].to(out.latents), atol=ATOL, rtol=0)
