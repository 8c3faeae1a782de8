"""Every inversion method x every edit method on the tiny SDXL through `VideoEditor` (issue 13, item 3).

Two 32x32 frames (4x4 latents: the tiny SDXL UNet's smallest, two downsamplings), 2 steps, the
target prompt equal to the source prompt and guidance 1 in the inversion and the edit. Each edit
is checked for finite frames of the clip's shape and for one property that holds exactly:

- pnp (full injection): the edit is the reconstruction of the record (the source branch it copies
  from IS the reconstruction, and the same prompt adds nothing);
- tokenflow (every frame a keyframe, `full` attention): the same, the correspondence field being
  the identity;
- fatezero (full replacement): with maps stored during the inversion (fp32) the edit equals the
  edit that recomputes them in the edit (the maps are a pure function of the record);
and for ddpm_ef, whose regeneration is exact, every edit gives the source latents back.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import moving_square
from vidinv import VideoEditor
from vidinv.attention.inflate import frame_attention_of
from vidinv.config import config_from_dict
from vidinv.editing.fatezero import store_plan
from vidinv.editing.pnp import PnPEdit
from vidinv.editor import load_models_for
from vidinv.inversion import reconstruct
from vidinv.inversion.api import table_for

PROMPT = "a red bike"
INVERSIONS = ["ddim", "freeinv", "mbdi", "ddpm_ef"]
EDITS = ["pnp", "tokenflow", "fatezero"]
EDIT_SETTINGS = {
    "pnp": {"inject_features": 1.0, "inject_attention": 1.0},
    "tokenflow": {"inject_features": 1.0, "inject_attention": 1.0, "keyframe_stride": 1},
    "fatezero": {"self_attn_steps": 1.0, "cross_attn_steps": 1.0, "store": "memory", "store_dtype": "fp32"},
}
ATOL = 1e-4  # fp32 rounding through 2 steps (the SD tests' tolerance for the same properties)


def sdxl_config(inversion: str = "ddim", edit: str = "pnp", **edit_changes) -> dict:
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
def test_every_inversion_and_edit_method_runs_on_sdxl_with_its_exact_property(sdxl_full, frames, inversion, edit):
    editor = VideoEditor(sdxl_config(inversion, edit), models=sdxl_full)
    out = editor.edit(frames)
    assert out.frames.shape == frames.shape and out.frames.isfinite().all()
    assert out.latents.shape == (2, 4, 4, 4) and out.latents.isfinite().all()
    if edit == "fatezero":
        assert out.stats["store_origin"] == "inversion"
        recomputed = VideoEditor(sdxl_config(inversion, edit, store="recompute"), models=sdxl_full)
        expected = recomputed.edit_latents(None, record=out.record).latents
    else:
        expected = reconstruct(sdxl_full, out.record, editor.config)
    torch.testing.assert_close(out.latents, expected, atol=ATOL, rtol=0)
    if inversion == "ddpm_ef":
        torch.testing.assert_close(out.latents, out.record.latents[-1].to(out.latents), atol=ATOL, rtol=0)


def test_sdxl_edits_default_to_the_sdxl_family_layers(sdxl_full):
    """edit.feature_layers / attention_layers / store_layers null: the family's defaults (SDXL: the
    features of up_blocks.0, its 1/4-resolution decoder level; not SD's up_blocks.1)."""
    family, unet = sdxl_full.family, sdxl_full.unet
    injection = PnPEdit(sdxl_full, config_from_dict(sdxl_config("ddim", "pnp"))).injection(3)
    modules = dict(unet.named_modules())
    assert injection.feature_modules == [modules["up_blocks.0.resnets.1"]]
    assert injection.attention_layers == set(family.attention_layers(frame_attention_of(unet).self_layers))
    config = config_from_dict(sdxl_config("ddim", "fatezero"))
    plan = store_plan(sdxl_full, config, table_for(sdxl_full, 3), 0)
    assert set(plan.self_layers + plan.cross_layers) == set(family.store_layers(unet))
