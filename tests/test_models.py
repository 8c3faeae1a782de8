"""Model loading: the tiny model, diffusers folders, LDM single files, dtype/device and errors."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    infer_diffusers_model_type,
)
from safetensors.torch import save_file

from tests.ldm_layout import models_to_ldm, unet_to_ldm, vae_to_ldm, with_text_model
from vidinv.errors import VidinvError
from vidinv.models import encode_prompts, load_models, resolve_device, resolve_dtype
from vidinv.models.tiny import build_tiny_components

PROMPTS = ["a red bike", ""]


@pytest.fixture
def offline(monkeypatch):
    """No hub: the env var for child code, the constant huggingface_hub read at import."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def saved(tiny_models, tmp_path_factory):
    """The tiny model written as a diffusers folder, an LDM .safetensors file and an LDM .ckpt file."""
    root = tmp_path_factory.mktemp("saved")
    tiny_models.save_pretrained(root / "folder")
    ldm = models_to_ldm(tiny_models.unet, tiny_models.vae, tiny_models.text_encoder)
    save_file(ldm, root / "model.safetensors")
    torch.save({"state_dict": ldm}, root / "model.ckpt")
    return root


@torch.no_grad()
def outputs(models) -> dict[str, torch.Tensor]:
    """UNet noise prediction, VAE encode/decode and text embeddings on fixed small inputs."""
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 16, generator=gen)
    image = torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1
    text = encode_prompts(models, PROMPTS)
    to = {"device": models.device, "dtype": models.dtype}
    return {
        "text": text,
        "unet": models.unet(latents.to(**to), torch.tensor([10, 500]), encoder_hidden_states=text).sample,
        "encode": models.vae.encode(image.to(**to)).latent_dist.mean,
        "decode": models.vae.decode(latents.to(**to)).sample,
    }


def assert_same_outputs(got, want):
    for name in want:
        assert torch.equal(got[name], want[name]), name


def assert_one_line_error(err: pytest.ExceptionInfo, key: str):
    message = str(err.value)
    assert "\n" not in message and message.startswith(key), message


# --- the LDM layout the single-file tests write -------------------------------------------------


def test_ldm_layout_is_exact_inverse_of_diffusers_conversion(tiny_models):
    unet, vae, text_encoder = tiny_models.unet, tiny_models.vae, tiny_models.text_encoder
    ldm = models_to_ldm(unet, vae, text_encoder)
    converted = {
        "unet": (convert_ldm_unet_checkpoint(ldm, dict(unet.config)), unet.state_dict()),
        "vae": (convert_ldm_vae_checkpoint(ldm, dict(vae.config)), vae.state_dict()),
        "clip": (
            convert_ldm_clip_checkpoint(ldm),
            {with_text_model(k): v for k, v in text_encoder.state_dict().items()},
        ),
    }
    for name, (got, want) in converted.items():
        assert got.keys() == want.keys(), name
        assert all(torch.equal(got[k], want[k]) for k in want), name


def test_ldm_layout_is_recognised_as_sd1_checkpoint(tiny_models):
    ldm = models_to_ldm(tiny_models.unet, tiny_models.vae, tiny_models.text_encoder)
    assert infer_diffusers_model_type(ldm) == "v1"
    assert {k.split(".")[0] for k in ldm} == {"model", "first_stage_model", "cond_stage_model"}
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in ldm


# keys of the real SD 1.5 checkpoint (v1-5-pruned-emaonly) that the layout must produce at SD 1.5 sizes
SD15_KEYS = [
    "model.diffusion_model.input_blocks.3.0.op.weight",
    "model.diffusion_model.input_blocks.4.0.skip_connection.weight",
    "model.diffusion_model.input_blocks.8.1.transformer_blocks.0.attn2.to_k.weight",
    "model.diffusion_model.middle_block.1.proj_in.weight",
    "model.diffusion_model.output_blocks.2.1.conv.weight",
    "model.diffusion_model.output_blocks.5.2.conv.weight",
    "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
    "model.diffusion_model.out.2.weight",
    "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight",
    "first_stage_model.encoder.down.0.downsample.conv.weight",
    "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
    "first_stage_model.decoder.up.3.upsample.conv.weight",
    "first_stage_model.decoder.mid.attn_1.proj_out.weight",
]


def test_ldm_layout_at_sd15_sizes_has_sd15_key_names():
    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
        )
    ldm = {**unet_to_ldm(unet.state_dict(), 2), **vae_to_ldm(vae.state_dict(), 4)}
    assert [k for k in SD15_KEYS if k not in ldm] == []
    assert infer_diffusers_model_type(ldm) == "v1"
    assert convert_ldm_unet_checkpoint(ldm, dict(unet.config)).keys() == unet.state_dict().keys()
    assert convert_ldm_vae_checkpoint(ldm, dict(vae.config)).keys() == vae.state_dict().keys()


# --- tiny model, folders and single files --------------------------------------------------------


def test_tiny_model_is_deterministic(tiny_models):
    again = load_models("tiny", dtype="fp32", device="cpu")
    for name in ("unet", "vae", "text_encoder"):
        first, second = getattr(tiny_models, name).state_dict(), getattr(again, name).state_dict()
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first), name
    assert_same_outputs(outputs(again), outputs(tiny_models))


def test_tiny_build_leaves_global_rng_untouched():
    state = torch.random.get_rng_state()
    build_tiny_components()
    assert torch.equal(torch.random.get_rng_state(), state)


def test_saved_folder_loads_back_with_identical_outputs(tiny_models, saved, offline):
    assert (saved / "folder" / "model_index.json").is_file()
    loaded = load_models(str(saved / "folder"), dtype="fp32", device="cpu")
    assert_same_outputs(outputs(loaded), outputs(tiny_models))


@pytest.mark.parametrize("name", ["model.safetensors", "model.ckpt"])
def test_single_file_with_config_folder_loads_offline_with_identical_outputs(tiny_models, saved, offline, name):
    loaded = load_models(str(saved / name), dtype="fp32", device="cpu", single_file_config=str(saved / "folder"))
    assert_same_outputs(outputs(loaded), outputs(tiny_models))
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    assert loaded.scheduler.config.steps_offset == tiny_models.scheduler.config.steps_offset


def test_single_file_tokenizer_comes_from_config_folder(tiny_models, saved, offline):
    loaded = load_models(str(saved / "model.safetensors"), device="cpu", single_file_config=str(saved / "folder"))
    assert loaded.tokenizer.get_vocab() == tiny_models.tokenizer.get_vocab()
    assert loaded.tokenizer.model_max_length == 77


# --- dtype and device --------------------------------------------------------------------------


def test_auto_resolves_to_fp32_on_cpu():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(("dtype", "expected"), [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_explicit_dtype_casts_every_module(dtype, expected):
    models = load_models("tiny", dtype=dtype, device="cpu")
    assert models.dtype == expected and models.device == torch.device("cpu")
    for name in ("unet", "vae", "text_encoder"):
        assert {p.dtype for p in getattr(models, name).parameters()} == {expected}, name


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"dtype": "float64"}, "model.dtype"),
        ({"dtype": "half"}, "model.dtype"),
        ({"device": "gpu"}, "model.device"),
        ({"device": "cuda:x"}, "model.device"),
        pytest.param(
            {"device": "cuda"}, "model.device", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="")
        ),
    ],
)
def test_bad_dtype_or_device_raises_error_naming_the_key(kwargs, key):
    with pytest.raises(VidinvError) as err:
        load_models("tiny", **kwargs)
    assert_one_line_error(err, key)


# --- bad sources --------------------------------------------------------------------------------


# (pretrained, single_file_config, key the message starts with); names are under tmp_path, `hub:` is a hub id
BAD_SOURCES = {
    "missing folder": ("nope", None, "model.pretrained"),
    "missing file": ("nope.safetensors", None, "model.pretrained"),
    "folder without unet": ("empty", None, "model.pretrained"),
    "not a model file": ("notes.txt", None, "model.pretrained"),
    "corrupt safetensors": ("corrupt.safetensors", None, "model.pretrained"),
    "unreachable hub id": ("hub:vidinv-test/no-such-model", None, "model.pretrained"),
    "missing config folder": ("corrupt.safetensors", "nope", "model.single_file_config"),
    "config folder without model_index": ("corrupt.safetensors", "empty", "model.single_file_config"),
}


def _source(root, name: str | None) -> str | None:
    if name is None or name.startswith("hub:"):
        return name and name.removeprefix("hub:")
    return str(root / name)


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_pretrained_raises_one_line_error(tmp_path, offline, case):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.safetensors").write_bytes(b"this is not a safetensors file")
    (tmp_path / "notes.txt").write_text("hello")
    pretrained, config, key = BAD_SOURCES[case]
    with pytest.raises(VidinvError) as err:
        load_models(_source(tmp_path, pretrained), device="cpu", single_file_config=_source(tmp_path, config))
    assert_one_line_error(err, key)


def test_single_file_without_config_offline_says_what_to_set(saved, offline):
    with pytest.raises(VidinvError) as err:
        load_models(str(saved / "model.safetensors"), device="cpu")
    assert_one_line_error(err, "model.pretrained")
    assert "single_file_config" in str(err.value)


def test_single_file_with_unreachable_config_hub_id_says_so(saved, offline):
    with pytest.raises(VidinvError) as err:
        load_models(str(saved / "model.safetensors"), device="cpu", single_file_config="vidinv-test/no-such-config")
    assert_one_line_error(err, "model.pretrained")
    assert "'vidinv-test/no-such-config' is a hub id" in str(err.value)


def test_single_file_missing_a_component_raises_one_line_error(tiny_models, saved, tmp_path, offline):
    unet_only = {
        k: v
        for k, v in models_to_ldm(tiny_models.unet, tiny_models.vae, tiny_models.text_encoder).items()
        if k.startswith("model.diffusion_model.")
    }
    save_file(unet_only, tmp_path / "unet_only.safetensors")
    with pytest.raises(VidinvError) as err:
        load_models(str(tmp_path / "unet_only.safetensors"), device="cpu", single_file_config=str(saved / "folder"))
    assert_one_line_error(err, "model.pretrained")


# --- tokenizer and module state ------------------------------------------------------------------


def test_tiny_tokenizer_is_bos_one_id_per_byte_eos_padded_to_77(tiny_models):
    tokenizer = tiny_models.tokenizer
    text = "a café"
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length).input_ids
    body = ids[1 : ids.index(tokenizer.eos_token_id)]
    assert len(ids) == 77 == tokenizer.model_max_length
    assert ids[0] == tokenizer.bos_token_id
    assert len(body) == len(text.encode().replace(b" ", b""))
    assert set(ids[1 + len(body) :]) == {tokenizer.eos_token_id}


@pytest.mark.parametrize("source", ["tiny", "folder", "model.safetensors"])
def test_loaded_modules_are_in_eval_mode_without_grads(saved, offline, source):
    pretrained = source if source == "tiny" else str(saved / source)
    models = load_models(pretrained, device="cpu", single_file_config=str(saved / "folder"))
    for name in ("unet", "vae", "text_encoder"):
        module = getattr(models, name)
        assert not any(m.training for m in module.modules()), name
        assert not any(p.requires_grad for p in module.parameters()), name


def test_a_scheduler_asking_for_x0_clipping_gets_a_one_line_note(tmp_path, offline, caplog):
    """vidinv's steps never clip x0 (an inversion needs the unclipped estimate): a config that asks
    for it is loaded with a note saying so, not silently."""
    import json

    load_models("tiny", device="cpu").save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "clip_sample": True}))
    with caplog.at_level("WARNING", logger="vidinv"):
        load_models(str(tmp_path / "m"), device="cpu")
    notes = [r.getMessage() for r in caplog.records if "clip_sample" in r.getMessage()]
    assert len(notes) == 1 and "not applied" in notes[0]


@pytest.mark.parametrize(
    "family, expected",
    [
        (None, torch.float16),
        ("sd3", torch.float16),
        ("flux", torch.bfloat16),
        ("wan", torch.bfloat16),
        ("hunyuan", torch.bfloat16),
    ],
)
def test_auto_dtype_on_cuda_is_the_precision_each_family_is_published_in(family, expected):
    from vidinv.models import resolve_dtype

    assert resolve_dtype("auto", torch.device("cuda"), family) == expected
    assert resolve_dtype("auto", torch.device("cpu"), family) == torch.float32
    assert resolve_dtype("fp16", torch.device("cuda"), family) == torch.float16  # an explicit dtype is kept
