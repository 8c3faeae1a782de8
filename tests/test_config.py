"""The config: file -> defaults -> overrides -> validation, with one-line errors that name the key."""

from __future__ import annotations

import pytest

from vidinv.config import Config, config_from_dict, load_config, to_yaml, valid_keys
from vidinv.errors import VidinvError


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_every_section_is_present():
    config = load_config()
    assert config == Config()
    assert {"model", "video", "inversion", "edit", "runtime"} <= set(valid_keys())


def test_file_values_override_defaults_and_dotlist_overrides_the_file(tmp_path):
    path = write(tmp_path, "inversion:\n  steps: 30\n  source_prompt: a cat\nvideo:\n  num_frames: 4\n")
    config = load_config(path, ["inversion.steps=12", "runtime.overwrite=true"])
    assert config.inversion.steps == 12
    assert config.inversion.source_prompt == "a cat"
    assert config.video.num_frames == 4
    assert config.runtime.overwrite is True
    assert config.model.pretrained == Config().model.pretrained


def test_override_values_are_converted_to_the_declared_type():
    config = load_config(None, ["edit.guidance_scale=3", "video.num_frames=null", "inversion.source_prompt=a b"])
    assert config.edit.guidance_scale == 3.0 and isinstance(config.edit.guidance_scale, float)
    assert config.video.num_frames is None
    assert config.inversion.source_prompt == "a b"


@pytest.mark.parametrize(
    ("override", "named", "suggested"),
    [
        ("inversion.stepz=3", "inversion.stepz", "inversion.steps"),
        ("steps=3", "steps", "inversion.steps"),
        ("runtime.vae_chunks=2", "runtime.vae_chunks", "runtime.vae_chunk"),
        ("modle.dtype=fp16", "modle", "model"),
    ],
)
def test_unknown_key_error_names_the_key_and_the_nearest_valid_one(override, named, suggested):
    with pytest.raises(VidinvError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert f"'{named}'" in message and f"'{suggested}'" in message
    assert "\n" not in message


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = write(tmp_path, "video:\n  pth: x.mp4\n")
    with pytest.raises(VidinvError, match=r"unknown key 'video.pth'.*'video.path'") as err:
        load_config(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("inversion.steps=abc", "inversion.steps"),
        ("runtime.overwrite=maybe", "runtime.overwrite"),
        ("edit.guidance_scale=high", "edit.guidance_scale"),
    ],
)
def test_wrong_type_is_an_error_naming_key_and_expected_type(override, key):
    with pytest.raises(VidinvError, match=rf"'{key}' got .* expected"):
        load_config(None, [override])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("inversion.method=magic", "inversion.method"),
        ("inversion.steps=0", "inversion.steps"),
        ("video.height=100", "video.height"),
        ("video.stride=0", "video.stride"),
        ("edit.pnp.inject_features=1.5", "edit.pnp.inject_features"),
        ("edit.skip=20", "edit.skip"),
        ("runtime.vae_chunk=-1", "runtime.vae_chunk"),
        ("model.frame_attention=global", "model.frame_attention"),
    ],
)
def test_out_of_range_or_unknown_choice_is_an_error_naming_the_key(override, key):
    with pytest.raises(VidinvError, match=rf"'{key}'"):
        load_config(None, ["inversion.steps=20", override] if key != "inversion.steps" else [override])


@pytest.mark.parametrize("bad", ["no_equals_sign", "video.path"])
def test_override_without_equals_is_an_error(bad):
    with pytest.raises(VidinvError, match="key=value"):
        load_config(None, [bad])


def test_missing_and_malformed_files_are_one_line_errors(tmp_path):
    with pytest.raises(VidinvError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(VidinvError, match="not valid YAML"):
        load_config(write(tmp_path, "model: [unclosed\n"))
    with pytest.raises(VidinvError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_resolved_yaml_reloads_to_the_same_config(tmp_path):
    config = load_config(None, ["inversion.steps=7", "edit.target_prompt=a robot", "video.num_frames=null"])
    path = write(tmp_path, to_yaml(config))
    assert load_config(path) == config


def test_config_from_dict_validates_like_the_cli():
    assert config_from_dict({"inversion": {"steps": 5}}).inversion.steps == 5
    with pytest.raises(VidinvError, match="inversion.stepz"):
        config_from_dict({"inversion": {"stepz": 5}})


def test_every_shipped_config_validates():
    from tests.conftest import REPO

    shipped = sorted((REPO / "configs").glob("*.yaml"))
    assert shipped, "configs/ is empty"
    for path in shipped:
        load_config(path)
