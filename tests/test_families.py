"""Model families: detection (folders, single files, built-ins), SD 2.x / SDXL loading, inflation on SDXL."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_models import assert_one_line_error
from vidinv.attention import frame_attention_of, install_frame_attention, remove_frame_attention, run_unet
from vidinv.errors import VidinvError
from vidinv.models import detect_family, encode_text, load_models


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def folders(sd2, sdxl, tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    sd2.save_pretrained(root / "sd2")
    sdxl.save_pretrained(root / "sdxl")
    return root


@torch.no_grad()
def unet_output(models) -> torch.Tensor:
    """UNet output on fixed latents with the model's own text conditioning (SDXL: added kwargs)."""
    text = encode_text(models, ["a red bike", ""])
    z = torch.randn(2, 2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return run_unet(models.unet, z, torch.tensor(500), text.emb, added_cond_kwargs=text.added)


# --- detection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family", "prediction", "encoders"),
    [
        ("tiny", "sd1", "epsilon", ("CLIPTextModel",)),
        ("tiny-sd2", "sd2", "v_prediction", ("CLIPTextModel",)),
        ("tiny-sdxl", "sdxl", "epsilon", ("CLIPTextModel", "CLIPTextModelWithProjection")),
    ],
)
def test_builtin_models_report_their_family_prediction_type_and_encoders(name, family, prediction, encoders):
    detected = detect_family(name)
    assert (detected.name, detected.prediction_type, detected.text_encoders) == (family, prediction, encoders)
    assert detected.size == 128  # 16 latent px x VAE factor 8
    assert load_models(name, device="cpu").family == detected


def test_saved_folders_are_detected_from_model_index_without_loading(folders, offline):
    assert detect_family(str(folders / "sd2")).name == "sd2"
    assert detect_family(str(folders / "sdxl")).zero_empty_negative is True
    index = json.loads((folders / "sdxl" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and "text_encoder_2" in index


def test_real_configs_give_the_published_sizes_and_prediction_types():
    from vidinv.models.family import family_from_configs

    sd = {"_class_name": "StableDiffusionPipeline"}
    vae = {"block_out_channels": [128, 256, 512, 512]}
    sd15 = family_from_configs("x", sd, {"sample_size": 64, "cross_attention_dim": 768}, {}, vae)
    sd21 = family_from_configs(
        "x", sd, {"sample_size": 96, "cross_attention_dim": 1024}, {"prediction_type": "v_prediction"}, vae
    )
    xl = family_from_configs("x", {"_class_name": "StableDiffusionXLPipeline"}, {"sample_size": 128}, {}, vae)
    assert (sd15.name, sd15.size, sd15.prediction_type) == ("sd1", 512, "epsilon")
    assert (sd21.name, sd21.size, sd21.prediction_type) == ("sd2", 768, "v_prediction")
    assert (xl.name, xl.size, xl.feature_layers) == ("sdxl", 1024, ("up_blocks.0.resnets.1",))


@pytest.mark.parametrize("pipeline", ["FluxPipeline", "StableDiffusion3Pipeline"])
def test_unsupported_pipeline_folder_is_a_one_line_error(tmp_path, offline, pipeline):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    for call in (lambda: detect_family(str(tmp_path)), lambda: load_models(str(tmp_path), device="cpu")):
        with pytest.raises(VidinvError) as err:
            call()
        assert_one_line_error(err, "model.pretrained")
        assert pipeline in str(err.value)


def test_prediction_type_override_replaces_the_schedulers_and_bad_values_are_errors():
    assert load_models("tiny-sd2", device="cpu", prediction_type="epsilon").family.prediction_type == "epsilon"
    assert detect_family("tiny", prediction_type="v_prediction").prediction_type == "v_prediction"
    with pytest.raises(VidinvError) as err:
        detect_family("tiny", prediction_type="v")
    assert_one_line_error(err, "model.prediction_type")


def test_sdxl_default_layers_exist_and_skip_the_first_decoder_attention_module(sdxl):
    handle = install_frame_attention(sdxl.unet, "none")
    try:
        family = sdxl.family
        layers = family.attention_layers(handle.self_layers)
        decoder = [n for n in handle.self_layers if n.startswith("up_blocks.")]
        assert layers and set(layers) < set(decoder)
        assert not any(n.startswith("up_blocks.0.attentions.0.") for n in layers)
        assert all(name in dict(sdxl.unet.named_modules()) for name in family.feature_layers)
        stored = family.store_layers(sdxl.unet)
        assert stored and all(n.startswith(("down_blocks.2.", "mid_block.", "up_blocks.0.")) for n in stored)
    finally:
        remove_frame_attention(sdxl.unet)


def test_sd_default_layers_are_the_sd15_editing_layers(tiny_models):
    """SD's defaults: TokenFlow's / PnP's SD 1.5 layers and FateZero's maps below full resolution."""
    handle = install_frame_attention(tiny_models.unet, "none")
    try:
        family = tiny_models.family
        decoder = [name for name in handle.self_layers if name.startswith("up_blocks.")]
        assert family.attention_layers(handle.self_layers) == decoder[1:]
        names = [name.rsplit(".", 1)[0] for name in tiny_models.unet.attn_processors]
        last_up = f"up_blocks.{len(tiny_models.unet.up_blocks) - 1}."
        assert family.store_layers(tiny_models.unet) == [
            n for n in names if not n.startswith(("down_blocks.0.", last_up))
        ]
        assert family.feature_layers == ("up_blocks.1.resnets.1",)
    finally:
        remove_frame_attention(tiny_models.unet)


@pytest.mark.parametrize("method", ["pnp", "fatezero"])
def test_edits_on_sdxl_use_the_sdxl_default_layers(sdxl, method):
    """With the layer keys null, PnP injects and FateZero stores at SDXL's own default layers."""
    from vidinv import VideoEditor

    config = {
        "inversion": {"steps": 2, "source_prompt": "a bike"},
        "edit": {"method": method},
        "video": {"num_frames": 2, "height": 64, "width": 64},
    }
    frames = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    try:
        stats = VideoEditor(config, models=sdxl, progress=False).edit(frames, "a car").stats.extra
        if method == "pnp":
            layers = sdxl.family.attention_layers(frame_attention_of(sdxl.unet).self_layers)
            assert stats["attention_layers"] == sorted(layers)
        else:
            assert stats["store_layers"] == sorted(sdxl.family.store_layers(sdxl.unet))
    finally:
        remove_frame_attention(sdxl.unet)  # the fixture is shared: leave its UNet as it was


# --- loading --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_saved_family_folder_loads_back_with_identical_unet_output(request, folders, offline, family):
    original = request.getfixturevalue(family)
    loaded = load_models(str(folders / family), dtype="fp32", device="cpu")
    assert loaded.family == original.family
    assert loaded.components() == original.components()
    assert torch.equal(unet_output(loaded), unet_output(original))


def test_sdxl_vae_stays_fp32_in_fp16_and_sd_vae_does_not():
    xl = load_models("tiny-sdxl", dtype="fp16", device="cpu")
    sd = load_models("tiny", dtype="fp16", device="cpu")
    assert next(xl.vae.parameters()).dtype == torch.float32
    assert next(xl.unet.parameters()).dtype == next(xl.text_encoder_2.parameters()).dtype == torch.float16
    assert next(sd.vae.parameters()).dtype == torch.float16


def test_vae_override_replaces_the_pipelines_vae(folders, offline):
    replaced = load_models("tiny", dtype="fp32", device="cpu", vae=str(folders / "sdxl"))
    assert replaced.vae.config.scaling_factor == 0.13025
    with pytest.raises(VidinvError) as err:
        load_models("tiny", device="cpu", vae=str(folders / "nope"))
    assert_one_line_error(err, "model.vae")


# --- the inflated UNet on SDXL --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sparse_causal", "keyframe", "full"])
def test_frame_attention_on_sdxl_unet_chunked_equals_unchunked(sdxl, mode):
    text = encode_text(sdxl, ["", "a red bike"])
    z = torch.randn(2, 5, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    handle = install_frame_attention(sdxl.unet, mode, "sdpa", keyframes="stride", keyframe_stride=2, group=3)
    try:
        assert any(".transformer_blocks.2." in name for name in handle.self_layers)  # several layers per block
        whole = run_unet(sdxl.unet, z, torch.tensor(300), text.emb, added_cond_kwargs=text.added)
        chunked = run_unet(sdxl.unet, z, torch.tensor(300), text.emb, added_cond_kwargs=text.added, chunk=2)
    finally:
        remove_frame_attention(sdxl.unet)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
