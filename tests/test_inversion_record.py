"""The inversion record: save/load, reuse when config and input match, atomic writes."""

from __future__ import annotations

import pytest
import torch

from vidinv.config import config_from_dict
from vidinv.inversion import api
from vidinv.inversion.record import JSON_NAME, InversionRecord, load_if_matching


def latents(seed=0):
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def config(**inversion):
    return config_from_dict({"inversion": {"steps": 4, **inversion}})


@pytest.mark.parametrize("method", ["freeinv", "ddpm_ef"])
def test_record_round_trips_through_safetensors_and_json(tiny_models, tmp_path, method):
    record = api.invert(tiny_models, latents(), config(method=method, source_prompt="a bike"))
    record.save(tmp_path / "inversion")
    loaded = InversionRecord.load(tmp_path / "inversion")
    assert torch.equal(loaded.latents, record.latents)
    assert (loaded.noise_maps is None) == (method != "ddpm_ef")
    if method == "ddpm_ef":
        assert torch.equal(loaded.noise_maps, record.noise_maps)
    for key in (
        "method",
        "timesteps",
        "transforms",
        "group",
        "source_prompt",
        "guidance_scale",
        "seed",
        "noise",
        "fingerprint",
        "stats",
    ):
        assert getattr(loaded, key) == getattr(record, key), key
    assert loaded.scheduler_config["num_train_timesteps"] == 1000
    assert loaded.transform_at(0) == record.transforms[0] and loaded.steps == 4


def test_invert_or_load_reuses_only_a_matching_record(tiny_models, tmp_path):
    folder = tmp_path / "inversion"
    first, reused = api.invert_or_load(tiny_models, latents(), config(method="freeinv"), folder)
    assert not reused
    again, reused = api.invert_or_load(tiny_models, latents(), config(method="freeinv"), folder)
    assert reused and torch.equal(again.latents, first.latents)
    for changed_config, changed_latents in [
        (config(method="freeinv", seed=1), latents()),
        (config(method="freeinv", steps=5), latents()),
        (config(method="ddim"), latents()),
        (config(method="ddim"), latents(seed=1)),
    ]:
        _, reused = api.invert_or_load(tiny_models, changed_latents, changed_config, folder)
        assert not reused


def test_fingerprint_ignores_fields_the_method_does_not_use(tiny_models):
    x = latents()

    def fp(**kw):
        return api.fingerprint(api.fingerprint_fields(tiny_models, config(**kw)), x)

    assert fp(method="ddim", seed=0, transforms="rot90") == fp(method="ddim", seed=5, transforms="flips")
    assert fp(method="freeinv", seed=0) != fp(method="freeinv", seed=5)
    assert fp(method="ddpm_ef", noise="shared") != fp(method="ddpm_ef", noise="independent")


def test_interrupted_save_leaves_no_record(tiny_models, tmp_path, monkeypatch):
    import vidinv.inversion.record as record_module

    record = api.invert(tiny_models, latents(), config(method="ddim"))

    def failing_write(path, tensors, metadata=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(record_module, "write_tensors", failing_write)
    with pytest.raises(KeyboardInterrupt):
        record.save(tmp_path / "inversion")
    assert list(tmp_path.iterdir()) == []
    assert load_if_matching(tmp_path / "inversion", record.fingerprint) is None


def test_incomplete_or_foreign_folder_is_not_a_record(tmp_path):
    folder = tmp_path / "inversion"
    folder.mkdir()
    (folder / JSON_NAME).write_text("{not json", encoding="utf-8")
    assert load_if_matching(folder, "x") is None


def test_fingerprint_is_the_same_in_every_process():
    """diffusers' config has set-ordered bookkeeping (`_use_default_values`); it must not reach the fingerprint."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    code = (
        "import types, torch; from diffusers import DDIMScheduler; from vidinv.config import config_from_dict;"
        "from vidinv.inversion import api; from vidinv.models.tiny import SD_SCHEDULER_CONFIG;"
        "m = types.SimpleNamespace(scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG), dtype=torch.float32);"
        "print(api.fingerprint(api.fingerprint_fields(m, config_from_dict()), torch.zeros(1, 4, 8, 8)))"
    )
    prints = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONHASHSEED=seed, OMP_NUM_THREADS="1")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        prints.add(result.stdout.strip())
    assert len(prints) == 1
