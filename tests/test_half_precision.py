"""Half precision on the CPU: fp16 and bf16 edits of every tiny family with every method it supports (the
tiny SD model: every inversion x every edit method), against the same edit in fp32 with the fp32 model
cast (scripts/bench_precision.py runs them): nothing non-finite, the latents carried in fp32 where the
math needs it (the record, DDPM-EF's noise maps, the edit loop, FlowEdit's velocity differences), and
relative errors within bounds the measured ones justify. The SDXL VAE's fp16 overflow path is
tests/test_vae_overflow.py's."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from tests.conftest import REPO


def load_bench():
    """scripts/bench_precision.py as a module (it imports benchlib and bench_edit as siblings)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "scripts"))
        return importlib.import_module("bench_precision")


bench = load_bench()
HALF_RUNS = [(f, i, e, d) for f, methods in bench.METHODS.items() for i, e in methods for d in bench.DTYPES]
# Largest errors measured (2 frames, Wan 5; 32x32; 2 steps; every row of HALF_RUNS): fp16 record 5.3e-3,
# edited latents 4.8e-2, frames 7.1e-2; bf16 record 3.8e-2, latents 0.24, frames 0.51 (tiny-flux flowedit).
BOUNDS = {
    "fp16": {"record": 0.015, "latents": 0.1, "frames": 0.15},
    "bf16": {"record": 0.1, "latents": 0.5, "frames": 0.8},
}
FLOW_FRAME_MODELS = ("tiny-sd3", "tiny-flux")  # half-precision VAEs: FlowEdit's source record is cast to fp32


@pytest.fixture(scope="module")
def runs():
    """The bench's edits (2 frames, 32x32, 2 steps), each model and each fp32 reference made once."""
    return bench.PrecisionRuns(frames=2, size=32, steps=2)


@pytest.mark.parametrize("family", list(bench.METHODS))
def test_a_half_model_is_its_fp32_model_cast(runs, family):
    """The comparison is of arithmetic only: the tiny builders build fp32 weights and load_models casts them
    (the SDXL VAE with force_upcast, Wan's VAE and Wan's `_keep_in_fp32_modules` stay fp32: equal, not cast)."""
    full = runs.models(family, "fp32")
    for dtype in bench.DTYPES:
        half = runs.models(family, dtype)
        assert half.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        for name in ("denoiser", "vae", "text_encoder"):
            pairs = list(zip(getattr(half, name).parameters(), getattr(full, name).parameters(), strict=True))
            assert all(torch.equal(p, q.to(p.dtype)) for p, q in pairs), f"{family} {name} {dtype}"
        assert half.dtype in {p.dtype for p in half.denoiser.parameters()}  # Wan keeps its norms etc. in fp32


@pytest.mark.parametrize(("family", "inversion", "edit", "dtype"), HALF_RUNS)
def test_a_half_edit_is_finite_carried_in_fp32_and_near_fp32(runs, family, inversion, edit, dtype):
    row = runs.row(family, inversion, edit, dtype)
    assert "skipped" not in row, row["skipped"]
    assert row["finite"]  # record latents, noise maps, edited latents, frames
    if not (edit == "flowedit" and family in FLOW_FRAME_MODELS):
        assert row["record_dtype"] == "float32"
    assert row["noise_maps_dtype"] == ("float32" if inversion == "ddpm_ef" else None)
    assert row["loop_dtype"] == "float32"  # the edit loop's latents, every step
    assert row["velocity_dtype"] == ("float32" if edit == "flowedit" else None)  # v_tar - v_src in fp32
    for name, bound in BOUNDS[dtype].items():
        assert row[f"{name}_rel_error"] < bound, f"{name}: {row[f'{name}_rel_error']:.3g} >= {bound}"


@pytest.mark.parametrize("dtype", bench.DTYPES)
@pytest.mark.parametrize("family", FLOW_FRAME_MODELS)
def test_flowedit_keeps_its_source_record_in_fp32(runs, family, dtype):
    assert runs.row(family, "freeinv", "flowedit", dtype)["record_dtype"] == "float32"


def test_bench_precision_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "precision.json"
    assert bench.main(["--families", "tiny-wan", "--dtypes", "bf16", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [(r["inversion"], r["edit"], r["dtype"]) for r in record["rows"]] == [
        ("freeinv", "flowedit", "bf16"),
        ("ddim", "flowedit", "bf16"),
    ]
    assert all(r["finite"] and r["frames_rel_error"] < BOUNDS["bf16"]["frames"] for r in record["rows"])
    assert record["not_fp32"] == []  # Wan's VAE is fp32: its FlowEdit record too
    printed = capsys.readouterr().out
    assert "rel err record" in printed and "not carried in fp32: none" in printed
