"""FateZero on the tiny model: the attention store (capture, replay, round trip, bound) and the edit's
exact properties (see vidinv/editing/fatezero.py's docstring for which hold exactly and why)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tests.conftest import REPO
from vidinv.attention.inflate import install_frame_attention, remove_frame_attention
from vidinv.cli import main
from vidinv.config import config_from_dict
from vidinv.editing.attention_store import STORE_FILE, STORE_JSON, AttentionStore, read_store, store_of
from vidinv.editing.fatezero import (
    fatezero_edit,
    inversion_hooks,
    new_store,
    replay_store,
    store_plan,
    token_ids,
    token_map,
)
from vidinv.errors import VidinvError
from vidinv.inversion.api import invert, reconstruct, table_for

PROMPT = "a man riding a bike"


@pytest.fixture(scope="module")
def models(tiny_models):
    install_frame_attention(tiny_models.unet, "sparse_causal", "sdpa")
    yield tiny_models
    remove_frame_attention(tiny_models.unet)


@pytest.fixture(scope="module")
def latents():
    return torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def make_config(method="ddim", **edit):
    inversion = {"method": method, "steps": 4, "source_prompt": PROMPT}
    if method == "mbdi":
        inversion["transforms"] = "flips"
    defaults = {"method": "fatezero", "target_prompt": PROMPT, "self_attn_steps": 1.0, "cross_attn_steps": 1.0}
    if method == "ddpm_ef":
        defaults["skip"] = 0
        defaults["guidance_scale"] = 3.5  # the record's own guidance: the edit branch = the source branch
    else:
        defaults["guidance_scale"] = 1.0
    return config_from_dict(
        {"model": {"device": "cpu", "dtype": "fp32"}, "inversion": inversion, "edit": {**defaults, **edit}}
    )


def maxdiff(a, b) -> float:
    return (a - b).abs().max().item()


def same_maps(a: AttentionStore, b: AttentionStore) -> bool:
    return a.maps.keys() == b.maps.keys() and all(torch.equal(a.maps[k], b.maps[k]) for k in a.maps)


def test_store_round_trips_and_is_keyed_to_the_record(models, latents, tmp_path):
    config = make_config("freeinv")
    record = invert(models, latents, config, hooks=inversion_hooks(models, config))
    store = store_of(record)
    assert store.origin == "inversion" and store.fingerprint == record.fingerprint
    assert store.maps and all(m.dtype == torch.float16 and m.device.type == "cpu" for m in store.maps.values())
    record.save(tmp_path)
    store.save(tmp_path)
    assert (tmp_path / STORE_FILE).is_file() and (tmp_path / STORE_JSON).is_file()
    loaded = read_store(tmp_path, record.fingerprint)
    assert loaded.plan == store.plan and loaded.nbytes == store.nbytes and same_maps(loaded, store)
    assert read_store(tmp_path, "another record") is None
    info = json.loads((tmp_path / STORE_JSON).read_text())
    assert info["bytes_per_frame_per_step"] == store.bytes_per_frame_per_step > 0
    # a hook loads it for the same record (and refuses a plan it does not cover)
    fresh = new_store(models, config, table_for(models, record), 0)
    assert fresh.load(tmp_path, record) and fresh.origin == "loaded" and same_maps(fresh, store)
    wider = new_store(
        models, make_config("freeinv", store_layers=None, store_dtype="fp32"), table_for(models, record), 0
    )
    assert not wider.load(tmp_path, record)


@pytest.mark.parametrize("method", ["ddim", "freeinv", "mbdi", "ddpm_ef"])
def test_capture_leaves_the_record_unchanged_and_replay_reproduces_it_bit_for_bit(models, latents, method):
    config = make_config(method)
    captured = invert(models, latents, config, hooks=inversion_hooks(models, config))
    plain = invert(models, latents, config)
    assert torch.equal(captured.latents, plain.latents)  # storing reads the maps, never changes the output
    store = store_of(captured)
    replayed = replay_store(models, plain, config, new_store(models, config, table_for(models, plain), 0))
    assert replayed.origin == "replayed" and same_maps(replayed, store)  # maps keyed by timestep, right latents


def test_store_bound_is_enforced(models, latents):
    config = make_config("ddim", store_limit_mb=0)
    with pytest.raises(VidinvError, match="store_limit_mb"):
        invert(models, latents, config, hooks=inversion_hooks(models, config))


@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-4), ("fp16", 2e-3)])
def test_ddpm_ef_same_prompt_full_replacement_reproduces_the_reconstruction(models, latents, dtype, tol):
    """ddpm_ef samples along its inverted trajectory, so the stored maps are the reconstruction's own."""
    config = make_config("ddpm_ef", store_dtype=dtype)
    record = invert(models, latents, config, hooks=inversion_hooks(models, config))
    rec = reconstruct(models, record, config)
    result = fatezero_edit(models, record, config)
    assert result.stats["store_origin"] == "inversion" and result.stats["fused_calls"]["self"] > 0
    assert result.stats["fused_calls"]["cross"] > 0 and result.stats["store_bytes_per_frame_per_step"] > 0
    assert maxdiff(result.latents, rec) < tol
    assert maxdiff(result.latents, latents) < tol  # and the reconstruction is exact


def _store_along_reconstruction(models, record, config):
    """A store captured at the reconstruction's own latents (what the edit's source branch sees)."""
    store = new_store(models, config, table_for(models, record), 0)
    with store:
        rec = reconstruct(models, record, config)
    return store, rec


def test_freeinv_maps_stay_aligned_with_the_step_transform(models, latents):
    config = make_config("freeinv", store_dtype="fp32")  # rot90 group on square 8x8 latents
    record = invert(models, latents, config)
    assert set(record.transforms) - {"id"}, "the schedule must rotate for this test to mean anything"
    store, rec = _store_along_reconstruction(models, record, config)
    store.attach(record)
    aligned = fatezero_edit(models, record, config)
    assert aligned.stats["store_origin"] == "inversion"
    assert maxdiff(aligned.latents, rec) < 1e-4

    # the same maps captured in the wrong orientation (no transforms) do not reproduce it
    unrotated = copy.copy(record)
    unrotated.transforms = ["id"] * record.steps
    wrong, _ = _store_along_reconstruction(models, unrotated, config)
    wrong.attach(record)
    misaligned = fatezero_edit(models, record, config)
    assert maxdiff(misaligned.latents, rec) > 100 * max(maxdiff(aligned.latents, rec), 1e-6)


def test_ddim_with_inversion_maps_differs_by_the_inversion_mismatch_only(models, latents):
    config = make_config("ddim", store_dtype="fp32")
    record = invert(models, latents, config, hooks=inversion_hooks(models, config))
    rec = reconstruct(models, record, config)
    result = fatezero_edit(models, record, config)
    no_fusion = fatezero_edit(models, record, make_config("ddim", self_attn_steps=0.0, cross_attn_steps=0.0))
    assert maxdiff(no_fusion.latents, rec) < 1e-4  # without fusion the same-prompt edit is the reconstruction
    assert maxdiff(result.latents, rec) <= maxdiff(rec, latents) * 10  # same order as the inversion error


def test_blend_mask_and_token_alignment(models, latents):
    target = "a robot riding a bike"
    index = token_map(models, PROMPT, target)
    src, tgt = token_ids(models, PROMPT), token_ids(models, target)
    matched = [j for j in range(len(tgt)) if index[j] >= 0]
    assert all(src[index[j]] == tgt[j] for j in matched)  # only equal tokens are carried over
    real = len(models.tokenizer(target).input_ids)
    assert set(range(real - len("riding a bike") + 1, len(tgt))) <= set(matched)  # the unchanged end, eos, padding
    config = make_config("ddim", target_prompt="a robot riding a bike", blend_words=["man"], mask_threshold=0.9)
    record = invert(models, latents, config, hooks=inversion_hooks(models, config))
    result = fatezero_edit(models, record, config)
    assert 0.0 < result.stats["mask_fraction"] < 1.0
    assert torch.isfinite(result.latents).all()
    with pytest.raises(VidinvError, match="blend_words"):
        fatezero_edit(models, record, make_config("ddim", blend_words=["robot"]))


def test_plan_names_unknown_layers(models):
    config = make_config("ddim", store_layers=["up_blocks.9.attn1"])
    with pytest.raises(VidinvError, match="store_layers"):
        store_plan(models, config, table_for(models, 4), 0)


def test_cli_edit_runs_end_to_end_and_reuses_the_store(tmp_path):
    out = tmp_path / "run"
    args = [
        "-q",
        "edit",
        str(REPO / "configs" / "fatezero.yaml"),
        "video.num_frames=3",
        "video.height=64",
        "video.width=64",
        "inversion.steps=4",
        f"runtime.output_dir={out}",
    ]
    assert main(args) == 0
    for name in (
        "edited.mp4",
        "side_by_side.mp4",
        "metrics.json",
        "inversion/" + STORE_FILE,
        "inversion/" + STORE_JSON,
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["edit"]["method"] == "fatezero" and metrics["edit"]["store_origin"] == "inversion"
    assert metrics["edit"]["store_bytes_per_frame_per_step"] > 0 and metrics["record_reused"] is False

    assert main([*args, "runtime.overwrite=true"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["record_reused"] is True and again["edit"]["store_origin"] == "loaded"
    assert again["unet_calls"]["inversion"] == 0
    assert again["edit"]["store_bytes_per_frame_per_step"] == metrics["edit"]["store_bytes_per_frame_per_step"]

    # a store that does not cover the new plan (more self-attention steps) is captured again
    assert main([*args, "runtime.overwrite=true", "edit.self_attn_steps=1.0", "edit.cross_attn_steps=1.0"]) == 0
    wider = json.loads((out / "metrics.json").read_text())
    assert wider["record_reused"] is False and wider["edit"]["store_origin"] == "inversion"
