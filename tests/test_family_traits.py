"""Model families as traits: outside `vidinv.models` no code compares something to a family's name or
keys a table by family names (read from the package's source with ast); every family has its
record, its tiny model and tiny config; both model bundles are `ModelBundle`s whose `family` is a record."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.name_uses import name_uses
from vidinv.models import FAMILIES, Family, ModelBundle, load_models
from vidinv.models.causal_vae import temporal_factor
from vidinv.models.tiny_configs import TINY_PIPELINES, tiny_model_configs

PACKAGE = Path(__file__).resolve().parents[1] / "vidinv"
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"
FAMILY_NAMES = set(FAMILIES)


def family_name_uses(path: Path) -> list[str]:
    """Comparisons of something to a family's name, and tables keyed by two or more family names."""
    return name_uses(path, FAMILY_NAMES, "family")


def test_no_code_outside_models_branches_on_a_family_name():
    models = (PACKAGE / "models").resolve()
    found = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        if models not in path.resolve().parents
        for use in family_name_uses(path)
    ]
    assert found == []


def test_the_check_finds_the_branches_it_should(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('if family in ("sd3", "x"):\n    pass\nDEFAULTS = {"sd3": 1, "wan": 2}\nok = {"sd3": 1}\n')
    assert len(family_name_uses(planted)) == 2


def test_every_family_has_a_record_a_tiny_model_and_a_tiny_config():
    from vidinv.models.tiny import TINY_BUILDERS
    from vidinv.models.tiny_flow import TINY_FLOW_BUILDERS

    builders = TINY_BUILDERS | TINY_FLOW_BUILDERS
    shipped = {
        line.split(":", 1)[1].strip()
        for path in CONFIGS.glob("*.yaml")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith("pretrained:")
    }
    tiny = [name for f in FAMILIES.values() for name in f.tiny_names]
    assert sorted(tiny) == sorted(TINY_PIPELINES) == sorted(builders)
    for name, family in FAMILIES.items():
        assert isinstance(family, Family) and family.name == name and family.traits is family
        for model in family.tiny_names:
            assert TINY_PIPELINES[model] == family.pipeline, name
            assert model in shipped, f"{name}: no configs/tiny/*.yaml runs {model}"
        parts = tiny_model_configs(family.tiny)
        denoiser = parts.get("transformer" if family.adapter is not None else "unet")  # flow or CogVideoX
        assert denoiser is not None and denoiser[0] == family.denoiser, name
        assert parts["vae"][0] == family.vae, name
        assert (family.adapter is not None or not family.flow) and (family.flowedit is not None) == family.flow


def test_the_records_name_the_rules_their_tiny_configs_follow():
    """Latent normalisation, frame-count rule and text encoders: the tiny VAE's config keys and
    components agree with the record's rule (the numbers themselves are the checkpoint's)."""
    from vidinv.models.tiny_configs import tiny_full_configs, tiny_meta_modules

    for name, family in FAMILIES.items():
        parts = tiny_model_configs(family.tiny)
        vae = tiny_full_configs(family.tiny)["vae"][1]
        buffers = dict(tiny_meta_modules(family.tiny)["vae"].named_buffers())  # LTX-Video's statistics
        statistics = vae.get("latents_mean") or "latents_mean" in buffers
        rule = "mean_std" if statistics else "shift_scale" if vae.get("shift_factor") else "scale"
        assert rule == family.latents, name
        assert (temporal_factor(vae) > 1) == (family.frames == "causal") == family.video, name
        encoders = [cls for part, (cls, _) in sorted(parts.items()) if part.startswith("text_encoder")]
        assert set(encoders) <= set(family.text_encoders), name
        assert family.guidance_embedded == bool(parts.get("transformer", ("", {}))[1].get("guidance_embeds")), name


@pytest.mark.parametrize("name", [family.tiny for family in FAMILIES.values()])
def test_both_bundles_are_model_bundles_whose_family_is_the_record(name):
    models = load_models(name, dtype="fp32", device="cpu")
    assert isinstance(models, ModelBundle)
    record = FAMILIES[models.family.name]
    assert isinstance(models.family, Family) and models.family.traits is record
    assert models.denoiser is getattr(models, "transformer" if record.adapter is not None else "unet")
    assert models.video == record.video
    assert not hasattr(models, "unet") or record.adapter is None  # a transformer is never called a UNet
