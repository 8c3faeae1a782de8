"""FateZero on the tiny model: the attention store (capture, round trip, bound), recomputed maps,
and the edit's exact properties (see vidinv/editing/fatezero.py's docstring for which hold exactly
and why)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tests.conftest import REPO
from vidinv.attention.inflate import install_frame_attention, remove_frame_attention
from vidinv.cli import main
from vidinv.config import config_from_dict, in_sections
from vidinv.editing.attention_store import STORE_FILE, STORE_JSON, AttentionStore, read_store
from vidinv.editing.fatezero import FateZeroEdit, new_store, store_plan, token_ids, token_map
from vidinv.editing.pnp import pnp_edit
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
    defaults["store"] = "memory"
    if method == "ddpm_ef":
        defaults["skip"] = 0
        defaults["guidance_scale"] = 3.5  # the record's own guidance: the edit branch = the source branch
    else:
        defaults["guidance_scale"] = 1.0
    return config_from_dict(
        {"model": {"device": "cpu", "dtype": "fp32"}, "inversion": inversion, "edit": in_sections({**defaults, **edit})}
    )


def maxdiff(a, b) -> float:
    return (a - b).abs().max().item()


def same_maps(a: AttentionStore, b: AttentionStore, atol: float = 0.0) -> bool:
    return a.maps.keys() == b.maps.keys() and all(
        torch.allclose(a.maps[k].float(), b.maps[k].float(), atol=atol, rtol=0) for k in a.maps
    )


def captured(models, latents, config):
    """(record, method): the inversion with the method's captures (its store, in memory mode)."""
    method = FateZeroEdit(models, config)
    record = invert(models, latents, config, captures=method.captures(tuple(latents.shape)))
    return record, method


def test_store_round_trips_and_is_keyed_to_the_record(models, latents, tmp_path):
    config = make_config("freeinv")
    record, method = captured(models, latents, config)
    store = method.store
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
    # a capture loads it for the same record (and refuses a plan it does not cover)
    fresh = new_store(models, config, table_for(models, record), 0)
    assert fresh.load(tmp_path, record) and fresh.origin == "loaded" and same_maps(fresh, store)
    wider = new_store(
        models, make_config("freeinv", store_layers=None, store_dtype="fp32"), table_for(models, record), 0
    )
    assert not wider.load(tmp_path, record)


def test_predicted_store_size_is_the_captured_size(models, latents):
    from vidinv.attention.inflate import frame_attention_of
    from vidinv.editing.fatezero import predicted_store_bytes

    for method in ("ddim", "ddpm_ef"):
        config = make_config(method, self_attn_steps=0.5, cross_attn_steps=0.75)
        record, edit = captured(models, latents, config)
        plan = edit.store.plan
        pattern = frame_attention_of(models.unet).pattern
        assert predicted_store_bytes(models, plan, (8, 8), 3, pattern) == edit.store.nbytes > 0


@pytest.mark.parametrize("method", ["ddim", "freeinv", "mbdi", "ddpm_ef"])
@pytest.mark.slow
def test_capture_leaves_the_record_unchanged_and_recomputed_maps_equal_the_stored(models, latents, method):
    """The inversion's UNet call at step i is a pure function of the record: the source row the
    recomputing edit runs sees exactly the stored maps (up to the batch's float rounding)."""
    config = make_config(method, store_dtype="fp32")
    record, edit = captured(models, latents, config)
    plain = invert(models, latents, config)
    assert torch.equal(record.latents, plain.latents)  # storing reads the maps, never changes the output
    probe = AttentionStore(edit.store.plan, limit_mb=4096, unet=models.unet, row=0)  # the edit's source row
    recompute = make_config(method, store="recompute", store_dtype="fp32")
    with probe:
        result = FateZeroEdit(models, recompute).edit(plain)
    assert result.stats.extra["store_origin"] == "recomputed" and result.stats.source_branch == "inversion"
    assert same_maps(probe, edit.store, atol=1e-5)


def test_store_bound_is_enforced_and_auto_recomputes_past_it(models, latents):
    config = make_config("ddim", store_limit_mb=0)
    with pytest.raises(VidinvError, match="store_limit_mb"):
        captured(models, latents, config)
    auto = FateZeroEdit(models, make_config("ddim", store_limit_mb=0, store="auto"))
    assert auto.captures(tuple(latents.shape)) == [] and auto.store is None
    roomy = FateZeroEdit(models, make_config("ddim", store="auto"))
    assert roomy.captures(tuple(latents.shape)) == [roomy.store] and roomy.store is not None


@pytest.mark.parametrize(
    ("store", "dtype", "tol"), [("memory", "fp32", 1e-4), ("memory", "fp16", 2e-3), ("recompute", "fp16", 1e-4)]
)
def test_ddpm_ef_same_prompt_full_replacement_reproduces_the_reconstruction(models, latents, store, dtype, tol):
    """ddpm_ef samples along its inverted trajectory, so the source maps are the reconstruction's own."""
    config = make_config("ddpm_ef", store_dtype=dtype, store=store)
    record, method = captured(models, latents, config)
    rec = reconstruct(models, record, config)
    result = method.edit(record)
    assert result.stats.extra["store_origin"] == ("inversion" if store == "memory" else "recomputed")
    assert result.stats.extra["fused_calls"]["self"] > 0 and result.stats.extra["fused_calls"]["cross"] > 0
    assert maxdiff(result.latents, rec) < tol
    assert maxdiff(result.latents, latents) < tol  # and the reconstruction is exact


def _store_along_reconstruction(models, record, config):
    """A store captured at the reconstruction's own latents (what a reconstructed source branch sees)."""
    store = new_store(models, config, table_for(models, record), 0)
    with store:
        rec = reconstruct(models, record, config)
    return store, rec


def test_freeinv_maps_stay_aligned_with_the_step_transform(models, latents):
    config = make_config("freeinv", store_dtype="fp32")  # rot90 group on square 8x8 latents
    record = invert(models, latents, config)
    assert set(record.transforms) - {"id"}, "the schedule must rotate for this test to mean anything"
    store, rec = _store_along_reconstruction(models, record, config)
    aligned_edit = FateZeroEdit(models, config)
    aligned_edit.use_store(store, record)
    aligned = aligned_edit.edit(record)
    assert aligned.stats.extra["store_origin"] == "inversion"
    assert maxdiff(aligned.latents, rec) < 1e-4
    # the same maps captured in the wrong orientation (no transforms) do not reproduce it
    unrotated = copy.copy(record)
    unrotated.transforms = ["id"] * record.steps
    wrong, _ = _store_along_reconstruction(models, unrotated, config)
    misaligned_edit = FateZeroEdit(models, config)
    misaligned_edit.use_store(wrong, record)
    misaligned = misaligned_edit.edit(record)
    assert maxdiff(misaligned.latents, rec) > 100 * max(maxdiff(aligned.latents, rec), 1e-6)


def test_ddim_with_inversion_maps_differs_by_the_inversion_mismatch_only(models, latents):
    config = make_config("ddim", store_dtype="fp32")
    record, method = captured(models, latents, config)
    rec = reconstruct(models, record, config)
    result = method.edit(record)
    no_fusion = FateZeroEdit(models, make_config("ddim", self_attn_steps=0.0, cross_attn_steps=0.0)).edit(record)
    assert maxdiff(no_fusion.latents, rec) < 1e-4  # without fusion the same-prompt edit is the reconstruction
    assert maxdiff(result.latents, rec) <= maxdiff(rec, latents) * 10  # same order as the inversion error


@pytest.mark.parametrize("store", ["memory", "recompute"])
def test_blend_mask_and_token_alignment(models, latents, store):
    target = "a robot riding a bike"
    index = token_map(models, PROMPT, target)
    src, tgt = token_ids(models, PROMPT), token_ids(models, target)
    matched = [j for j in range(len(tgt)) if index[j] >= 0]
    assert all(src[index[j]] == tgt[j] for j in matched)  # only equal tokens are carried over
    real = len(models.tokenizer(target).input_ids)
    assert set(range(real - len("riding a bike") + 1, len(tgt))) <= set(matched)  # the unchanged end, eos, padding
    config = make_config("ddim", target_prompt=target, blend_words=["man"], mask_threshold=0.9, store=store)
    record, method = captured(models, latents, config)
    result = method.edit(record)
    assert 0.0 < result.stats.extra["mask_fraction"] < 1.0
    assert torch.isfinite(result.latents).all()
    if store == "recompute":  # one source-row pre-pass per masked step gives the mask
        assert result.stats.extra["mask_pass_calls"] == 3 * 4


def test_blend_words_missing_from_the_source_prompt_fail_before_the_inversion(models):
    with pytest.raises(VidinvError, match="blend_words") as err:
        FateZeroEdit(models, make_config("ddim", blend_words=["robot"])).check()
    assert "\n" not in str(err.value)


def test_plan_names_unknown_layers(models):
    config = make_config("ddim", store_layers=["up_blocks.9.attn1"])
    with pytest.raises(VidinvError, match="store_layers"):
        store_plan(models, config, table_for(models, 4), 0)


def test_edit_frame_calls_follow_the_documented_formulas(models):
    """8 frames x 10 steps, CFG, feature injection 0.8 (attention 0.5): PnP runs its source row
    only while injecting (224); FateZero with a store runs no source row (160), recomputing it
    runs one for the fused steps (160 + 8 x 8 = 224)."""
    frames = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    base = {"target_prompt": "a robot riding a bike", "guidance_scale": 7.5, "self_attn_steps": 0.5}
    config = make_config("freeinv", **base, cross_attn_steps=0.8)
    config.inversion.steps = 10
    record, method = captured(models, frames, config)
    assert method.edit(record).stats.frame_calls == 2 * 8 * 10
    config.edit.fatezero.store = "recompute"
    assert FateZeroEdit(models, config).edit(record).stats.frame_calls == 2 * 8 * 10 + 8 * 8
    config.edit.method = "pnp"
    assert pnp_edit(models, record, config).stats.frame_calls == 2 * 8 * 10 + 8 * 8


@pytest.mark.slow
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
    assert again["frame_calls"]["inversion"] == 0
    assert again["edit"]["store_bytes_per_frame_per_step"] == metrics["edit"]["store_bytes_per_frame_per_step"]

    # a store that does not cover the new plan (more self-attention steps) is captured again
    assert (
        main(
            [*args, "runtime.overwrite=true", "edit.fatezero.self_attn_steps=1.0", "edit.fatezero.cross_attn_steps=1.0"]
        )
        == 0
    )
    wider = json.loads((out / "metrics.json").read_text())
    assert wider["record_reused"] is False and wider["edit"]["store_origin"] == "inversion"
