"""`vidinv info MODEL`: family, pipeline, prediction type, size, encoders and methods of a source,
read from its configs; one-line errors for sources vidinv cannot use."""

from __future__ import annotations

import json
import re

import pytest
import torch

from vidinv.cli import main


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def info(capsys, *args) -> dict[str, str]:
    """The rows `vidinv info ARGS` prints, as a dict (the command must succeed)."""
    assert main(["info", *args]) == 0
    rows = [re.split(r"\s{2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines()]
    return {name: value for name, value in rows}


def one_line_error(capsys, *args) -> str:
    assert main(["info", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("name", "family", "prediction", "encoders", "edits"),
    [
        ("tiny", "sd1", "epsilon", "CLIPTextModel", "pnp, tokenflow, fatezero"),
        ("tiny-sd2", "sd2", "v_prediction", "CLIPTextModel", "pnp, tokenflow, fatezero"),
        ("tiny-sdxl", "sdxl", "epsilon", "CLIPTextModel, CLIPTextModelWithProjection", "pnp, tokenflow, fatezero"),
        (
            "tiny-sd3",
            "sd3",
            "flow (velocity)",
            "CLIPTextModelWithProjection, CLIPTextModelWithProjection",
            "pnp, flowedit",
        ),
        ("tiny-flux", "flux", "flow (velocity)", "CLIPTextModel, T5EncoderModel", "pnp, flowedit"),
        ("tiny-ltx", "ltx", "flow (velocity)", "T5EncoderModel", "flowedit"),
    ],
)
def test_builtin_models_report_family_prediction_encoders_and_their_edit_methods(
    capsys, name, family, prediction, encoders, edits
):
    rows = info(capsys, name)
    assert rows["family"] == family and rows["prediction type"].startswith(prediction)
    assert rows["text encoders"] == encoders and rows["edit methods"] == edits
    assert "built-in" in rows["source"]


def test_a_saved_sd2_folder_reports_its_scheduler_prediction_type_and_the_override(capsys, tmp_path, offline):
    from vidinv.models import load_models

    load_models("tiny-sd2", device="cpu").save_pretrained(tmp_path / "sd2")
    rows = info(capsys, str(tmp_path / "sd2"))
    assert rows["source"].endswith("(diffusers folder)")
    assert (rows["family"], rows["pipeline"], rows["prediction type"]) == (
        "sd2",
        "StableDiffusionPipeline",
        "v_prediction",
    )
    assert rows["default size"] == "128x128"  # unet sample_size 16 x VAE factor 8
    assert info(capsys, str(tmp_path / "sd2"), "--prediction-type", "epsilon")["prediction type"] == "epsilon"


def test_a_saved_flow_folder_reports_its_pipeline_and_shift(capsys, tmp_path, offline):
    from vidinv.models.tiny_flow import tiny_flow_pipeline

    tiny_flow_pipeline("tiny-sd3").save_pretrained(tmp_path / "sd3")
    rows = info(capsys, str(tmp_path / "sd3"))
    assert (rows["family"], rows["pipeline"], rows["shift"]) == ("sd3", "StableDiffusion3Pipeline", "3.0")
    assert rows["edit methods"] == "pnp, flowedit"


def test_unsupported_and_missing_sources_are_one_line_errors(capsys, tmp_path, offline):
    (tmp_path / "kandinsky").mkdir()
    (tmp_path / "kandinsky" / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    assert "KandinskyPipeline" in one_line_error(capsys, str(tmp_path / "kandinsky"))
    assert "no folder" in one_line_error(capsys, str(tmp_path / "missing"))
    assert "HF_HUB_OFFLINE" in one_line_error(capsys, "nobody/no-such-model")


TINY_NAMES = ("tiny", "tiny-sd2", "tiny-sdxl", "tiny-sd3", "tiny-flux", "tiny-wan", "tiny-hunyuan", "tiny-ltx")


def built_tiny(name: str) -> dict:
    """The components the tiny model `name` is built of (weights initialised, seed fixed)."""
    from vidinv.models.tiny import TINY_BUILDERS
    from vidinv.models.tiny_flow import TINY_FLOW_BUILDERS

    parts = (TINY_BUILDERS | TINY_FLOW_BUILDERS)[name]()
    return {part: component for part, component in parts.items() if component is not None}


def plain(value):
    """Tuples as lists, as a saved config.json holds them (and the marks of which keys took defaults
    dropped: diffusers' `_use_default_values`)."""
    value = {key: item for key, item in value.items() if key != "_use_default_values"}
    return json.loads(json.dumps(value, default=str))


@pytest.mark.parametrize("name", TINY_NAMES)
@pytest.mark.slow
def test_tiny_configs_as_data_are_those_of_the_built_models_with_their_parameter_counts(name):
    """`vidinv info tiny-*` reads `tiny_model_configs` instead of building the model: each component
    has the built one's class and config values, and built on the meta device its full config and
    its parameter count."""
    from vidinv.models.tiny_configs import tiny_full_configs, tiny_model_configs, tiny_parameter_counts

    built, configs, meta = built_tiny(name), tiny_model_configs(name), tiny_full_configs(name)
    assert set(configs) == set(built)
    for part, (cls, config) in configs.items():
        assert type(built[part]).__name__ == cls, part
        if part.startswith("tokenizer"):
            assert {key: getattr(built[part], key) for key in config} == config, part
            continue
        full = built[part].config
        full = dict(full) if isinstance(full, dict) else full.to_dict()
        assert plain({key: full[key] for key in config}) == plain(config), part
        assert (cls, plain(full)) == (meta[part][0], plain(meta[part][1])) or part == "scheduler", part
    counts = tiny_parameter_counts(name)
    assert counts == {
        part: sum(p.numel() for p in module.parameters())
        for part, module in built.items()
        if isinstance(module, torch.nn.Module)
    }
    assert all(count > 0 for count in counts.values())


@pytest.mark.parametrize("name", TINY_NAMES)
def test_info_on_a_tiny_name_prints_what_it_prints_for_the_saved_built_model(capsys, tmp_path, offline, name):
    """The rows of `vidinv info tiny-*` (from configs as data) are those of the built model saved to
    a folder (read from its config files), but for the source row."""
    from vidinv.models import load_models
    from vidinv.models.tiny_flow import TINY_FLOW_BUILDERS, tiny_flow_pipeline

    model = tiny_flow_pipeline(name) if name in TINY_FLOW_BUILDERS else load_models(name, device="cpu")
    model.save_pretrained(tmp_path / name)
    rows, saved = info(capsys, name), info(capsys, str(tmp_path / name))
    assert rows.pop("source") == f"{name} (built-in tiny random-weight model)"
    assert saved.pop("source").endswith("(diffusers folder)")
    assert rows == saved
