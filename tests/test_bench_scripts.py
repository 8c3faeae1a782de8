"""Smoke tests: each scripts/bench_*.py runs on the tiny model with its smallest arguments (2 frames,
2-3 steps, 8x8 latents) and writes JSON with the columns its table prints."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.conftest import REPO
from vidinv.errors import VidinvError

SCRIPTS = REPO / "scripts"


@pytest.fixture
def load_script(monkeypatch):
    """load_script(name) -> scripts/<name>.py as a module."""
    monkeypatch.syspath_prepend(str(SCRIPTS))  # the scripts import benchlib and archs as siblings

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def run_script(load_script, tmp_path):
    """run_script(name, *argv) -> (the script's module, the JSON it wrote)."""
    threads = torch.get_num_threads()

    def run(name: str, *argv: str):
        module = load_script(name)
        out = tmp_path / f"{name}.json"
        try:
            module.main([*argv, "--json", str(out)])
        finally:
            torch.set_num_threads(threads)
        record = json.loads(out.read_text())
        assert {"bench", "when", "environment", "args", "rows"} <= record.keys()
        return module, record

    return run


def keys(columns) -> list[str]:
    return [c if isinstance(c, str) else c[0] for c in columns]


def test_bench_edit(run_script, capsys):
    argv = ["--frames", "2", "--steps", "2", "--size", "64", "64", "--methods", "pnp", "fatezero", "--no-warmup"]
    bench, record = run_script("bench_edit", *argv)
    assert [r["method"] for r in record["rows"]] == ["pnp", "fatezero"]
    row, fatezero = record["rows"]
    assert set(keys(bench.COLUMNS)) - {"of_peak"} <= row.keys()
    # FreeInv inversion: 2 frames x 2 steps; PnP with CFG: 2 edit rows x 2 frames x 2 steps + the
    # source row while injecting (round(0.8 x 2) = 2 steps); FateZero with a store: no source row
    assert (row["inversion_unet_frame_calls"], row["edit_unet_frame_calls"]) == (4, 12)
    assert fatezero["edit_unet_frame_calls"] == 8
    assert row["unet_frame_calls"] == 16 and row["tflop"] > 0 and row["tflops_s"] > 0
    assert row["edit_peak_mb"] is not None and row["warp_error_source"] >= 0
    assert record["flops_per_frame"]["unet_call"] > 0
    out = capsys.readouterr().out
    assert "enc+inv s/f" in out


def test_bench_edit_fails_on_a_missing_method_before_running_any(load_script, tmp_path):
    bench = load_script("bench_edit")
    out = tmp_path / "edit.json"
    argv = ["--frames", "2", "--steps", "1", "--size", "64", "64", "--methods", "pnp", "nope", "--json", str(out)]
    with pytest.raises(VidinvError, match="edit.method") as err:
        bench.main(argv)
    assert "\n" not in str(err.value) and not out.exists()


def test_bench_edit_loops_a_short_clip_back_and_forth(load_script):
    ping_pong = load_script("bench_edit").ping_pong
    assert ping_pong(torch.arange(4.0), 9).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]


def test_bench_attention(run_script):
    argv = ["--frames", "2", "--latent", "8", "--backends", "sdpa", "naive", "--flops"]
    bench, record = run_script("bench_attention", *argv)
    assert [r["backend"] for r in record["rows"]] == ["sdpa", "naive"]
    for row in record["rows"]:
        assert set(keys(bench.COLUMNS)) - {"group", "of_peak", "skipped"} <= row.keys()
        assert row["tflop"] > 0
    assert record["arch"] == "tiny" and record["params"] > 0


def test_bench_vae(run_script):
    bench, record = run_script("bench_vae", "--arch", "tiny", "--frames", "2", "--size", "64", "64", "--chunk", "1")
    assert [(r["mode"], r["chunk"]) for r in record["rows"]] == [("chunked", 1), ("whole", 2)]
    for row in record["rows"]:
        assert set(bench.COLUMNS) <= row.keys()


def test_bench_inversion(run_script, capsys):
    argv = ["--frames", "2", "--steps", "3", "--methods", "ddim", "freeinv:flips", "ddpm_ef:shared"]
    bench, record = run_script("bench_inversion", *argv)
    rows = record["rows"]
    assert [r["method"] for r in rows] == ["ddim", "freeinv:flips", "ddpm_ef:shared"]
    assert rows[1]["frame_calls"] == rows[0]["frame_calls"] == 2 * 3 * 2
    assert rows[2]["psnr_db_mean"] > 60 and "edit_temporal_ratio" in rows[2]
    assert set(keys(bench.COLUMNS)) - {"edit_temporal_ratio"} <= rows[0].keys()
    assert "xDDIM" in capsys.readouterr().out


def test_bench_memory(run_script):
    argv = ["--frames", "2", "3", "--steps", "2", "--size", "64", "64", "--methods", "pnp"]
    bench, record = run_script("bench_memory", *argv)
    assert [r["frames"] for r in record["rows"]] == [2, 3]
    assert set(keys(bench.COLUMNS)) <= set(record["rows"][0])
    assert all(r["peak_mb"] > 0 and r["predicted_mb"] > 0 for r in record["rows"])
    assert record["rows"][-1]["slope_kb_per_frame"] is not None


def test_bench_batch_inverts_once_for_n_prompts(run_script, capsys):
    argv = ["--prompts", "2", "--frames", "2", "--steps", "2", "--size", "64", "64", "--threads", "1"]
    bench, record = run_script("bench_batch", *argv)
    separate, batch = record["rows"]
    assert (separate["mode"], batch["mode"]) == ("separate", "batch")
    assert separate["inversion_frame_calls"] == 2 * batch["inversion_frame_calls"] == 2 * 4
    assert separate["edit_frame_calls"] == batch["edit_frame_calls"] > 0
    assert 0 < batch["expected_ratio"] < 1 and batch["ratio"] > 0
    assert "batch/separate" in capsys.readouterr().out


def test_bench_flops_counts_on_meta_what_the_real_model_counts(run_script, load_script):
    bench, record = run_script("bench_flops", "--cases", "tiny:64", "--frames", "2", "--steps", "2")
    reference, tiny = record["rows"]
    assert (reference["case"], reference["vs_sd15_512"]) == ("sd15@512", 1.0)
    assert reference["unet_params_m"] == pytest.approx(859.52, abs=0.01)  # the published SD 1.5 UNet
    archs = load_script("archs")
    real = archs.frame_flops(archs.build_models("tiny", "cpu"), 64, 64)  # real tensors, not meta
    assert tiny["flops"] == real
    calls = tiny["pnp_frame_calls"]
    assert tiny["pnp_tflop"] == pytest.approx(
        (calls * real["unet_call"] + 2 * (real["vae_encode"] + real["vae_decode"])) / 1e12
    )


def test_published_architectures_have_their_published_sizes(load_script):
    """The random-weight archs the GPU benchmarks use (built on the meta device: shapes only)."""
    archs = load_script("archs")
    with torch.device("meta"):
        sdxl = archs.build_models("sdxl", "meta")
    assert round(archs.parameters(sdxl.unet) / 1e6, 1) == 2567.5  # SDXL base 1.0's UNet
    assert round(archs.parameters(sdxl.text_encoder_2) / 1e6, 1) == 694.7  # OpenCLIP ViT-bigG/14
    assert sdxl.family.name == "sdxl" and sdxl.family.size == 1024
    assert round(archs.flow_frame_flops("sd3", 256, 256)[1] / 1e6, 1) == 2028.3  # SD3 medium's transformer
