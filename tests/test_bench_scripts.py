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


def test_bench_memory_runs_a_saved_random_weight_arch(run_script, capsys):
    """--arch: the runs load a random-weight model of that shape from the folder the bench saved."""
    argv = ["--arch", "tiny", "--frames", "2", "3", "--steps", "2", "--size", "64", "64", "--methods", "pnp"]
    bench, record = run_script("bench_memory", *argv)
    assert [r["frames"] for r in record["rows"]] == [2, 3]
    assert set(keys(bench.COLUMNS)) <= set(record["rows"][0])
    assert all(r["peak_mb"] > 0 and r["predicted_mb"] > 0 for r in record["rows"])
    first, last = record["rows"]
    assert last["slope_kb_per_frame"] == pytest.approx((last["peak_mb"] - first["peak_mb"]) * 1024)
    assert record["slope_kb_per_frame"] == {"pnp": last["slope_kb_per_frame"]}
    assert "(tiny, 64x64, 2 steps)" in capsys.readouterr().out


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
    assert round(archs.flow_frame_flops("wan", 256, 256, 5)[1] / 1e6, 1) == 1419.0  # Wan 2.1 T2V 1.3B's transformer
    assert round(archs.flow_frame_flops("cogvideox", 256, 256, 5)[1] / 1e6, 1) == 1693.8  # CogVideoX-2b's transformer
    assert round(archs.flow_frame_flops("wan22", 256, 256, 5)[1] / 1e6, 1) == 4999.8  # Wan 2.2 TI2V-5B's
    assert round(archs.flow_frame_flops("wan22_a14b", 256, 256, 5)[1] / 1e6, 1) == 14288.5  # an A14B expert
    with torch.device("meta"):
        a14b = archs.build_models("wan22_a14b", "meta")
    assert a14b.family.name == "wan22" and a14b.boundary_timestep == 875.0
    assert archs.parameters(a14b.pipeline.transformer_2) == archs.parameters(a14b.transformer)  # two experts


def test_flow_archs_are_flow_models_of_the_published_shapes(load_script):
    """--arch sd3 / wan: the vidinv PipelineModels of SD3 medium without T5 and Wan 2.1 T2V 1.3B."""
    archs = load_script("archs")
    with torch.device("meta"):
        sd3, wan = archs.build_models("sd3", "meta"), archs.build_models("wan", "meta")
    millions = lambda module: round(archs.parameters(module) / 1e6, 1)  # noqa: E731
    assert (sd3.family.name, wan.family.name, sd3.video, wan.video) == ("sd3", "wan", False, True)
    assert sd3.pipeline.text_encoder_3 is None and sd3.max_sequence_length == 256 and wan.max_sequence_length == 512
    assert millions(sd3.transformer) == 2028.3
    assert (millions(sd3.text_encoder), millions(sd3.pipeline.text_encoder_2)) == (123.7, 694.7)  # CLIP-L, bigG
    assert (sd3.vae.config.latent_channels, sd3.vae.config.scaling_factor, sd3.vae.config.shift_factor) == (
        16,
        1.5305,
        0.0609,
    )
    assert millions(wan.transformer) == 1419.0  # diffusers' count of Wan2.1-T2V-1.3B (1.42 B)
    assert millions(wan.vae) == 126.9 and next(wan.vae.parameters()).dtype == torch.float32  # Wan 2.1's VAE
    assert wan.text_encoder.config.d_model == 4096 and wan.text_encoder.config.num_layers == 1
    assert sd3.scheduler.config.shift == wan.scheduler.config.shift == 3.0


def test_flow_archs_build_in_the_asked_dtype(load_script):
    archs = load_script("archs")
    with torch.device("meta"):
        wan = archs.build_models("wan", "meta", torch.bfloat16)
    assert next(wan.transformer.parameters()).dtype == next(wan.text_encoder.parameters()).dtype == torch.bfloat16
    assert next(wan.vae.parameters()).dtype == torch.float32  # kept in fp32, as vidinv loads Wan
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("pretrained, frames", [("tiny-sd3", 2), ("tiny-wan", 5)])
def test_bench_inversion_on_flow_models(run_script, capsys, pretrained, frames):
    methods = ["ddim", "freeinv:rot90", "mbdi:rot90", "ddpm_ef:shared"]
    argv = ["--pretrained", pretrained, "--frames", str(frames), "--steps", "2", "--methods", *methods]
    bench, record = run_script("bench_inversion", *argv)
    rows = record["rows"]
    assert [r["method"] for r in rows] == methods[:3]  # ddpm_ef: skipped with a note
    latent = 2  # Wan: 1 + (5 - 1) / 4 latent frames
    assert (record["frames"], record["latent_frames"], record["flow"]) == (frames, latent, True)
    for row, group in zip(rows, (1, 1, 4)):
        assert row["inversion_frame_calls"] == row["reconstruction_frame_calls"] == latent * 2 * group
        assert row["inversion_peak_mb"] is not None and row["reconstruction_peak_mb"] is not None
    assert set(keys(bench.COLUMNS)) - {"edit_temporal_ratio"} <= rows[0].keys()
    out = capsys.readouterr().out
    assert "ddpm_ef:shared steps=2: skipped (inversion.method: ddpm_ef cannot run on a flow-matching model" in out
    assert "FreeInv / flow time, 2 steps, freeinv:rot90: " in out and "xflow" in out
    assert ("latent F" in out) == (pretrained == "tiny-wan")


def test_bench_edit_on_wan(run_script, capsys):
    """FlowEdit on Wan, with the warm-up (a 5-frame clip: Wan's causal VAE takes 1 + 4k); pnp refuses Wan."""
    argv = ["--pretrained", "tiny-wan", "--frames", "5", "9", "--steps", "3", "--size", "64", "64"]
    bench, record = run_script("bench_edit", *argv, "--methods", "flowedit", "pnp")
    assert [(r["method"], r["frames"], r["latent_frames"]) for r in record["rows"]] == [
        ("flowedit", 5, 2),
        ("flowedit", 9, 3),
    ]
    five, nine = record["rows"]
    # FlowEdit: no inversion; n_max = round(33/50 x 3) = 2 steps of source + target branches, CFG on
    # both (2 rows each), n_min = 0: latent frames x 2 x (2 + 2)
    assert (five["inversion_unet_frame_calls"], five["edit_unet_frame_calls"], nine["unet_frame_calls"]) == (0, 16, 24)
    assert all(five[f"{stage}_peak_mb"] is not None for stage in ("inversion", "edit", "decode"))
    flops = record["flops_per_frame_by_frames"]
    assert five["tflop"] == pytest.approx(
        (16 * flops["5"]["unet_call"] + 5 * (flops["5"]["vae_encode"] + flops["5"]["vae_decode"])) / 1e12
    )
    assert "pnp: skipped (edit.method: pnp runs on frame models; on Wan" in capsys.readouterr().out


def test_bench_edit_on_sd3(run_script, capsys):
    argv = ["--pretrained", "tiny-sd3", "--frames", "2", "--steps", "3", "--size", "64", "64", "--no-warmup"]
    bench, record = run_script("bench_edit", *argv, "--methods", "flowedit", "pnp", "tokenflow")
    flowedit, pnp = record["rows"]
    assert (flowedit["method"], flowedit["unet_frame_calls"], flowedit["latent_frames"]) == ("flowedit", 16, None)
    # FreeInv 2 frames x 3 steps; PnP with CFG: 2 frames x (2 rows x 3 steps + the source row on round(0.8 x 3) = 2)
    assert (pnp["inversion_unet_frame_calls"], pnp["edit_unet_frame_calls"]) == (6, 16)
    assert "tokenflow: skipped (edit.method: tokenflow runs on UNet models" in capsys.readouterr().out


def test_flow_flops_on_meta_copies_equal_the_real_models(load_script):
    """archs.frame_flops on a flow model counts on meta copies of its transformer and VAE: the same
    FLOPs as the model's own modules (Wan: per latent frame of the clip, its causal VAE per frame)."""
    from vidinv.models import load_models
    from vidinv.models.flow import flow_condition

    archs = load_script("archs")
    for name, frames in (("tiny-sd3", 1), ("tiny-wan", 5)):
        models = load_models(name, device="cpu", dtype="fp32")
        real = archs.flow_unit_flops(
            models.family, models.transformer, models.vae, flow_condition(models, [""]), 64, 64, frames
        )
        assert archs.frame_flops(models, 64, 64, frames) == real and min(real.values()) > 0


def test_bench_flops_counts_wan_per_latent_frame(run_script):
    bench, record = run_script("bench_flops", "--cases", "wan:64x96", "--frames", "4", "--steps", "4")
    reference, wan = record["rows"]
    assert (wan["case"], wan["frames"], wan["latent_frames"]) == ("wan@64x96", 5, 2)  # 4 frames -> 1 + 4
    assert round(wan["unet_params_m"], 1) == 1419.0 and "pnp_tflop" not in wan
    # FlowEdit with the defaults: n_max = round(33/50 x 4) = 3, CFG on both branches, in latent frames
    assert wan["flowedit_frame_calls"] == 2 * 3 * (2 + 2)
    flops = wan["flops"]
    assert wan["flowedit_tflop"] == pytest.approx(
        (24 * flops["unet_call"] + 5 * (flops["vae_encode"] + flops["vae_decode"])) / 1e12
    )


def test_bench_memory_of_the_inversion_with_the_record_on_disk(run_script, capsys):
    argv = ["--command", "invert", "--frames", "2", "--steps", "2", "--size", "64", "64", "--methods", "ddpm_ef"]
    bench, record = run_script("bench_memory", *argv, "--set", "runtime.record=disk")
    (row,) = record["rows"]
    assert row["method"] == "ddpm_ef" and row["peak_mb"] > 0 and row["predicted_mb"] > 0
    assert "`vidinv invert`" in capsys.readouterr().out


def test_gpu_check_dry_run_plans_every_case_without_a_gpu(load_script, tmp_path, capsys, monkeypatch):
    """--dry-run on a machine without a GPU: every case with its config and the plan's predicted peak, in the
    budget or skipped by it, and no weights loaded, no model run."""
    import vidinv.jobs.edit
    import vidinv.models.loading
    from vidinv.editor import VideoEditor

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run loads no weights and runs no model")

    for owner, name in ((vidinv.models.loading, "load_models"), (vidinv.jobs.edit, "run"), (VideoEditor, "edit")):
        monkeypatch.setattr(owner, name, refuse)
    check = load_script("gpu_check")
    out = tmp_path / "gpu_check.json"
    assert check.main(["--dry-run", "--families", "tiny", "--budget-s", "80", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    rows = record["rows"]
    kinds = ["setup", "timed", *["memory"] * 5, "xformers", "drift", "repeat", "memory"]
    assert [r["kind"] for r in rows] == kinds
    assert [r["offload"] for r in rows if r["kind"] == "memory"] == [
        "none",
        "none",
        "none",
        "model",
        "sequential",
        "none",
    ]
    assert [r["frames"] for r in rows if r["kind"] == "memory"] == [16, 64, 256, 1000, 1000, 1000]
    for row in rows[1:]:
        assert row["predicted_peak_mb"] > 0 and row["predicted_frame_calls"] > 0 and row["estimate_s"] > 0
        assert "model.dtype=fp16" in row["overrides"] and "video.height=64" in row["overrides"]
    assert rows[1]["predicted_frame_calls"] == 48 * 50 + 48 * (2 * 50 + 40)  # FreeInv + PnP with CFG, 48 frames
    # the budget (80 s; the tiny estimates are mostly model loads, 15 + 20 + 10 s for the first three, 40 s for
    # each 1000-frame run): the first cases fit, no 1000-frame run does
    assert [r["status"] for r in rows[:3]] == ["planned"] * 3
    assert all(r["status"] == "skipped" and r["note"].startswith("over budget") for r in rows if r["frames"] == 1000)
    assert sum(r["estimate_s"] for r in rows if r["status"] == "planned") <= 80
    assert record["skipped"] == [r["case"] for r in rows if r["status"] == "skipped"]
    assert record["dry_run"] and record["finished"] and record["errors"] == []
    printed = capsys.readouterr().out
    assert "tiny/pnp-48f-50steps [timed" in printed and "video.num_frames=1000 inversion.steps=2" in printed


def test_gpu_check_needs_a_gpu_without_dry_run(load_script, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_script("gpu_check").main([]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a CUDA GPU" in err and "--dry-run" in err and "\n" not in err


def test_gpu_check_runs_its_cases_on_the_cpu(load_script, tmp_path):
    """--device cpu: every kind of case through its real path (tiny, 2-3 frames): setup, the timed edit, an
    offloaded edit's peak, drift, two jobs' md5; xformers is skipped off CUDA."""
    check = load_script("gpu_check")
    out = tmp_path / "gpu_check.json"
    argv = ["--device", "cpu", "--families", "tiny", "--frames", "2", "--steps", "2", "--long-frames", "3"]
    argv += ["--short-frames", "2", "--short-steps", "2", "--xformers-frames", "2"]
    argv += ["--only", "*setup", "*pnp*", "*offload-model", "*drift*", "*repeat*", "*xformers*"]
    assert check.main([*argv, "--out", str(out)]) == 0
    rows = {r["kind"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["setup", "timed", "memory", "xformers", "drift", "repeat"]
    assert rows["xformers"]["status"] == "skipped"
    assert all(r["status"] == "ok" for kind, r in rows.items() if kind != "xformers")
    assert rows["timed"]["frame_calls"] == rows["timed"]["predicted_frame_calls"] == 2 * 2 + 2 * (2 * 2 + 2)
    assert rows["memory"]["offload"] == "model" and rows["memory"]["limit_check"] == "pass"
    assert rows["repeat"]["identical"] and rows["drift"]["finite"] and 0 < rows["drift"]["rel_error"] < 0.1
