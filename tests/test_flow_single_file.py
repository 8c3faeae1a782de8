"""SD3 and Flux from a single file (original layout) with `model.single_file_config` naming the
pipeline folder: the files are written here from the tiny models (`tests/flow_layout.py`, checked
against diffusers' own conversion), recognised from their keys, loaded into the same weights and
the same flow inversion as the folder; unsupported files and configs are one-line errors.

diffusers' Flux conversion has one fixed size, Flux.1's inner width 3072 (where it splits the single
blocks' fused q, k, v and MLP input); the tiny Flux is 32 wide, so its loads here run diffusers'
conversion with that one line reading the width from the model's config (`flux_width`).
"""

from __future__ import annotations

import inspect
import re
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from tests.flow_layout import flux_to_original, sd3_to_original
from tests.ldm_layout import vae_to_ldm
from vidinv import VideoEditor
from vidinv.cli import main
from vidinv.errors import VidinvError
from vidinv.models import load_models
from vidinv.models.flow import PipelineModels, flow_family_of
from vidinv.models.tiny_flow import tiny_flow_pipeline

FAMILIES = {"tiny-sd3": "sd3", "tiny-flux": "flux"}
LABELS = {"tiny-sd3": "SD3", "tiny-flux": "Flux"}


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def flux_conversion_at_config_width():
    """diffusers' `convert_flux_transformer_checkpoint_to_diffusers`, its own code recompiled with its
    one fixed size (`inner_dim = 3072`) read from the model's config (module docstring)."""
    from diffusers.loaders import single_file_utils

    convert = single_file_utils.convert_flux_transformer_checkpoint_to_diffusers
    source = textwrap.dedent(inspect.getsource(convert))
    if source.count("inner_dim = 3072") != 1:
        return convert  # diffusers reads the width from the config by now
    width = 'inner_dim = kwargs["config"]["num_attention_heads"] * kwargs["config"]["attention_head_dim"]'
    namespace = dict(vars(single_file_utils))
    exec(compile(source.replace("inner_dim = 3072", width), single_file_utils.__file__, "exec"), namespace)
    return namespace[convert.__name__]


@pytest.fixture
def flux_width(monkeypatch):
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    entry = SINGLE_FILE_LOADABLE_CLASSES["FluxTransformer2DModel"]
    monkeypatch.setitem(entry, "checkpoint_mapping_fn", flux_conversion_at_config_width())


def original_layout(pipeline, name: str) -> dict:
    """The file a user has: SD3 as sd3_medium.safetensors (MMDiT + VAE under
    `model.diffusion_model.` / `first_stage_model.`), Flux as flux1-dev.safetensors (transformer only)."""
    if name == "tiny-flux":
        return flux_to_original(pipeline.transformer)
    vae = vae_to_ldm(pipeline.vae.state_dict(), len(pipeline.vae.config.up_block_types))
    return sd3_to_original(pipeline.transformer) | {k: v.contiguous() for k, v in vae.items()}


def write(name: str, root) -> tuple:
    """(name, pipeline, file, folder): the tiny pipeline, its original-layout file and its folder."""
    pipeline = tiny_flow_pipeline(name)
    pipeline.save_pretrained(root / "folder")
    save_file(original_layout(pipeline, name), root / "model.safetensors")
    return name, pipeline, str(root / "model.safetensors"), str(root / "folder")


@pytest.fixture(scope="module", params=list(FAMILIES))
def written(request, tmp_path_factory):
    return write(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def sd3_written(tmp_path_factory):
    return write("tiny-sd3", tmp_path_factory.mktemp("sd3"))


@pytest.fixture(scope="module")
def flux_written(tmp_path_factory):
    return write("tiny-flux", tmp_path_factory.mktemp("flux"))


def assert_same_weights(want: torch.nn.Module, got: torch.nn.Module) -> None:
    a, b = want.state_dict(), got.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_written_files_convert_back_exactly_in_diffusers(written, flux_width, offline):
    """The test writer inverts diffusers' conversion: diffusers' from_single_file of the file is the
    tiny transformer (and VAE) exactly."""
    import diffusers

    name, pipeline, file, folder = written
    cls = type(pipeline.transformer)
    assert_same_weights(pipeline.transformer, cls.from_single_file(file, config=folder, subfolder="transformer"))
    if name == "tiny-sd3":
        vae = diffusers.AutoencoderKL.from_single_file(file, config=folder, subfolder="vae")
        assert_same_weights(pipeline.vae, vae)


def test_published_sizes_are_recognised_and_convert_back_in_unchanged_diffusers(monkeypatch):
    """At SD3-medium's, SD3.5-medium's (dual attention, q/k norms) and Flux.1-dev's sizes (meta
    tensors) diffusers reads the written keys as their model types, which vidinv takes for its flow
    families, and its conversion (Flux's fixed width included) gives back every key and shape."""
    from tests.conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # the published configs (scripts/archs.py)
    from archs import FLUX_TRANSFORMER_CONFIG, SD3_TRANSFORMER_CONFIG
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
    from diffusers.loaders import single_file_utils as utils

    from vidinv.models.flow import FILE_TYPES

    sd35_medium = {**SD3_TRANSFORMER_CONFIG, "pos_embed_max_size": 384, "qk_norm": "rms_norm"}
    sd35_medium["dual_attention_layers"] = tuple(range(13))
    with torch.device("meta"):
        cases = [
            (SD3Transformer2DModel(**SD3_TRANSFORMER_CONFIG), sd3_to_original, "sd3", "sd3"),
            (SD3Transformer2DModel(**sd35_medium), sd3_to_original, "sd35_medium", "sd3"),
            (FluxTransformer2DModel(**FLUX_TRANSFORMER_CONFIG), flux_to_original, "flux-dev", "flux"),
        ]
    converters = {"sd3": utils.convert_sd3_transformer_checkpoint_to_diffusers}
    converters["flux"] = utils.convert_flux_transformer_checkpoint_to_diffusers
    for transformer, to_original, model_type, family in cases:
        original = to_original(transformer)
        assert utils.infer_diffusers_model_type(original) == model_type and FILE_TYPES[model_type] == family
        back, want = converters[family](dict(original)), transformer.state_dict()
        assert back.keys() == want.keys() and all(back[k].shape == want[k].shape for k in want), model_type


def inversion_config(pretrained: str, single_file_config: str | None = None) -> dict:
    model = {"pretrained": pretrained, "single_file_config": single_file_config, "dtype": "fp32", "device": "cpu"}
    return {
        "model": model,
        "video": {"num_frames": 2, "height": 32, "width": 32},
        "inversion": {"method": "flow", "steps": 3, "source_prompt": "a red car", "guidance_scale": 2.0},
    }


def test_a_single_file_loads_into_the_tiny_weights_and_inverts_as_the_folder(written, flux_width, offline):
    name, pipeline, file, folder = written
    loaded = load_models(file, dtype="fp32", device="cpu", single_file_config=folder)
    assert isinstance(loaded, PipelineModels) and loaded.family.name == FAMILIES[name] and loaded.source == file
    assert_same_weights(pipeline.transformer, loaded.transformer)
    assert_same_weights(pipeline.vae, loaded.vae)  # SD3: from the file; Flux: from the folder
    assert not any(p.requires_grad for p in loaded.transformer.parameters())
    frames = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    from_file = VideoEditor(inversion_config(file, folder)).invert(frames)[0]  # the config path
    from_folder = VideoEditor(inversion_config(folder)).invert(frames)[0]
    assert from_file.method == "flow" and torch.equal(from_file.latents, from_folder.latents)


def info(capsys, *args) -> dict[str, str]:
    assert main(["info", *args]) == 0
    rows = [re.split(r"\s{2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines()]
    return {name: value for name, value in rows}


def test_the_family_comes_from_the_keys_and_info_reports_it(written, capsys, offline):
    name, pipeline, file, folder = written
    family = FAMILIES[name]
    assert flow_family_of(file) == family and flow_family_of(file, folder) == family
    rows = info(capsys, file, "--single-file-config", folder)
    assert rows["source"] == f"{file} (single file)" and rows["family"] == family
    assert rows["pipeline"] == type(pipeline).__name__ and rows["edit methods"] == "pnp, flowedit"
    assert rows["single file"].endswith(f"the other components from {folder}")
    assert rows["single file"].startswith("SD3 transformer and VAE" if family == "sd3" else "Flux transformer (")
    assert rows == info(capsys, folder) | {"source": rows["source"], "single file": rows["single file"]}
    alone = info(capsys, file)  # without its config: what the keys say
    assert alone["family"] == family and "not set" in alone["single file"] and "shift" not in alone


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_unsupported_files_and_configs_are_one_line_errors(written, tmp_path, capsys, offline):
    name, pipeline, file, folder = written
    random = tmp_path / "random.safetensors"
    save_file({"some.weight": torch.zeros(2, 2), "other.bias": torch.zeros(3)}, random)
    with pytest.raises(VidinvError) as err:
        load_models(str(random), device="cpu", single_file_config=folder)
    assert one_line(err) == f"model.pretrained: {random} is no {LABELS[name]} transformer file (original layout)"
    with pytest.raises(VidinvError) as err:
        load_models(str(random), device="cpu")  # no config: diffusers' `v1` for unknown keys is refused
    assert str(random) in one_line(err) and "no type diffusers knows" in str(err.value)
    assert main(["info", str(random)]) == 2
    assert capsys.readouterr().err.strip() == f"vidinv: error: {err.value}"
    with pytest.raises(VidinvError) as err:
        load_models(file, device="cpu", single_file_config=str(tmp_path / "missing"))
    assert one_line(err) == f"model.single_file_config: folder {tmp_path / 'missing'} does not exist"
    with pytest.raises(VidinvError) as err:
        load_models(file, device="cpu")
    assert "model.single_file_config" in one_line(err) and ("FLUX.1-dev" in str(err.value)) == (name == "tiny-flux")
    with pytest.raises(VidinvError) as err:
        load_models(file, device="cpu", single_file_config="vidinv-test/no-such-config")
    assert one_line(err).startswith("model.single_file_config: 'vidinv-test/no-such-config' is not in the hub cache")
    other = "tiny-flux" if name == "tiny-sd3" else "tiny-sd3"
    tiny_flow_pipeline(other).save_pretrained(tmp_path / other)
    with pytest.raises(VidinvError) as err:
        load_models(file, device="cpu", single_file_config=str(tmp_path / other))
    assert "model.single_file_config" in one_line(err) and "transformer" in str(err.value)


def test_a_flux_file_of_another_width_than_flux1s_says_so_in_one_line(flux_written, offline):
    """Without the test's width patch diffusers cannot split the tiny Flux's fused single-block weights."""
    _, _, file, folder = flux_written
    with pytest.raises(VidinvError) as err:
        load_models(file, device="cpu", single_file_config=folder)
    assert one_line(err).startswith(f"model.pretrained: cannot load checkpoint {file}")
    assert "width 3072, Flux.1's; this one's is 32" in str(err.value)


@pytest.mark.slow
def test_edit_and_plan_commands_take_an_sd3_file_and_its_folder(sd3_written, tmp_path, capsys, offline):
    from vidinv.config import config_from_dict
    from vidinv.planning import plan_run

    _, _, file, folder = sd3_written
    args = [f"model.pretrained={file}", f"model.single_file_config={folder}", "model.dtype=fp32", "model.device=cpu"]
    args += ["video.num_frames=2", "video.height=32", "video.width=48", "inversion.steps=3", "edit.flowedit.n_max=2"]
    assert main(["--quiet", "edit", "configs/sd3_flowedit.yaml", *args, f"runtime.output_dir={tmp_path}"]) == 0
    assert "edited 2 frames 32x48" in capsys.readouterr().out
    planned = plan_run(config_from_dict(inversion_config(file, folder)))
    assert planned == plan_run(config_from_dict(inversion_config(folder)))


def test_text_encoders_in_an_sd3_file_are_noted_and_the_configs_used(sd3_written, tmp_path, caplog, offline):
    from tests.ldm_layout import with_text_model

    _, pipeline, file, folder = sd3_written
    clip = {
        f"text_encoders.clip_l.transformer.{with_text_model(k)}": v
        for k, v in pipeline.text_encoder.state_dict().items()
    }
    save_file(original_layout(pipeline, "tiny-sd3") | clip, tmp_path / "incl_clips.safetensors")
    with caplog.at_level("WARNING", logger="vidinv"):
        loaded = load_models(str(tmp_path / "incl_clips.safetensors"), device="cpu", single_file_config=folder)
    assert "the text encoders in" in caplog.text and "single_file_config's are used" in caplog.text
    assert_same_weights(pipeline.transformer, loaded.transformer)
    assert_same_weights(pipeline.text_encoder, loaded.text_encoder)


def test_a_wan_config_takes_no_single_file(sd3_written, tmp_path, offline):
    """Wan folders load (the video model), Wan single files do not: one line either way."""
    _, _, file, _ = sd3_written
    tiny_flow_pipeline("tiny-wan").save_pretrained(tmp_path / "wan")
    random = tmp_path / "random.safetensors"
    save_file({"some.weight": torch.zeros(2, 2)}, random)
    with pytest.raises(VidinvError) as err:
        load_models(str(random), device="cpu", single_file_config=str(tmp_path / "wan"))
    assert one_line(err).endswith("vidinv loads single files of SD3 / Flux / LTX-Video, not Wan")
    with pytest.raises(VidinvError) as err:
        load_models(file, device="cpu", single_file_config=str(tmp_path / "wan"))
    assert one_line(err).endswith(f"is a WanPipeline, but {file} holds an original-layout SD3 transformer")
