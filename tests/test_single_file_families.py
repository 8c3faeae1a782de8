"""Single-file checkpoints of SD 2.x and SDXL (issue 13 item 2): the original layouts (LDM UNet and
VAE; SD 2.x's OpenCLIP tower; SDXL's two towers under `conditioner.embedders`) load with a config
folder into the same weights and text conditioning, and real-size key layouts are recognised as
their family from the keys alone."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from tests.ldm_layout import SDXL_OPEN_CLIP_PREFIX, models_to_ldm_file_dict, open_clip_to_ldm, unet_to_ldm
from vidinv.models import encode_text, load_models
from vidinv.models.family import SINGLE_FILE_TYPES


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("name", ["tiny-sd2", "tiny-sdxl"])
def test_a_single_file_loads_into_the_same_weights_and_conditioning(tmp_path, offline, name):
    models = load_models(name, dtype="fp32", device="cpu")
    models.save_pretrained(tmp_path / "folder")
    save_file(models_to_ldm_file_dict(models), tmp_path / "model.safetensors")
    loaded = load_models(str(tmp_path / "model.safetensors"), device="cpu", single_file_config=str(tmp_path / "folder"))
    assert loaded.family == models.family
    for part in models.components():
        if isinstance(getattr(models, part), torch.nn.Module):
            want, got = getattr(models, part).state_dict(), getattr(loaded, part).state_dict()
            assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), part
    a, b = encode_text(models, ["a red bike", ""]), encode_text(loaded, ["a red bike", ""])
    assert torch.equal(a.emb, b.emb) and (a.added is None) == (b.added is None)
    assert a.added is None or all(torch.equal(a.added[k], b.added[k]) for k in a.added)


def test_real_size_layouts_are_recognised_as_sd2_and_sdxl_from_their_keys(monkeypatch):
    """What `vidinv info FILE` and the loader read from a single file (diffusers' key/shape rules)."""
    from tests.conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # the published SDXL shapes (scripts/archs.py)
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        sd2_unet = UNet2DConditionModel(
            cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True
        )
        open_clip = CLIPTextModel(
            CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=1, num_attention_heads=16)
        )
    sd2 = {**unet_to_ldm(sd2_unet.state_dict(), 2), **open_clip_to_ldm(open_clip.state_dict())}
    assert SINGLE_FILE_TYPES[infer_diffusers_model_type(sd2)] == "sd2"
    from archs import SDXL_TEXT_2_CONFIG, SDXL_UNET_CONFIG

    with torch.device("meta"):
        sdxl_unet = UNet2DConditionModel(**SDXL_UNET_CONFIG)
        big_g = CLIPTextModelWithProjection(CLIPTextConfig(**{**SDXL_TEXT_2_CONFIG, "num_hidden_layers": 10}))
    sdxl = {**unet_to_ldm(sdxl_unet.state_dict(), 2), **open_clip_to_ldm(big_g.state_dict(), SDXL_OPEN_CLIP_PREFIX)}
    assert SINGLE_FILE_TYPES[infer_diffusers_model_type(sdxl)] == "sdxl"
