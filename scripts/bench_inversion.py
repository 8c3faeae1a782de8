#!/usr/bin/env python
"""Benchmark the inversion methods: reconstruction PSNR, wall time and UNet calls per step count.

For each step count and method: invert the clip's latents, regenerate with the source prompt, decode,
and compare with the VAE round trip of the input (the inversion's own error). FreeInv's time is
also given as a ratio of DDIM's in the same run (the method's claim: about 1.0x). For ddpm_ef with
shared and independent per-step noise, an edit probe regenerates from T_skip with the target prompt
and reports how much frame-to-frame change the edit adds (temporal ratio: 1.0 = as smooth as the source).

    python scripts/bench_inversion.py --frames 4 --steps 10 20 50            # tiny model, CPU
    python scripts/bench_inversion.py --pretrained runwayml/stable-diffusion-v1-5 --device cuda \
        --height 512 --width 512 --frames 16 --dtype fp16                     # real weights, GPU
    python scripts/bench_inversion.py --arch wan --frames 5 --steps 4 10 \
        --methods ddim freeinv:rot90 mbdi:rot90                              # Wan 2.1 1.3B shapes, random weights

Flow models (`--pretrained tiny-sd3 | tiny-flux | tiny-wan` or an SD3 / Flux / Wan pipeline,
`--arch sd3 | wan`): `ddim` is the flow inversion there (the Euler reversal; vidinv.inversion.flow
maps the deterministic methods onto it), freeinv and mbdi run on the same grid, and a method the
model refuses (ddpm_ef: no stochastic sampler on a flow grid) is skipped with a printed note. Wan
(a native video model) needs 1 + 4k frames and counts frame-calls in latent frames
(1 + (frames - 1) / 4, every latent frame in each call); both counts are printed.

Per row: frame-calls and peak memory of each stage (inversion, reconstruction; benchlib.PeakMemory:
CUDA allocator peak, CPU sampled RSS growth), the time of the whole (the best of --repeats runs,
the methods of a step count taken in turn on each round), and time / ddim's, after an untimed 1-step warm-up run. Prints a table and writes JSON (default bench_results/inversion.json).
"""

from __future__ import annotations

import argparse
import sys
import time

import archs
import benchlib
import torch

from vidinv.config import load_config
from vidinv.errors import VidinvError
from vidinv.inversion import api
from vidinv.inversion.costs import inversion_method
from vidinv.inversion.denoiser import GuidedModel
from vidinv.inversion.flow import is_flow_scheduler, record_sampler
from vidinv.inversion.samplers import sampler_for
from vidinv.jobs.common import load_clip
from vidinv.metrics import psnr_per_frame
from vidinv.models import decode_latents, encode_frames

REPO = benchlib.REPO

DEFAULT_METHODS = [
    "ddim",
    "freeinv:rot90",
    "freeinv:flips",
    "freeinv:dihedral",
    "mbdi:rot90",
    "ddpm_ef:shared",
    "ddpm_ef:independent",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    p.add_argument("--video", default=None, help="video.path (default: the config's sample clip)")
    archs.add_model_args(p, pretrained=None, device="cpu")  # --pretrained None: the config's (tiny in the demo)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, help="method[:group or noise]")
    p.add_argument("--unet-chunk", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="runs per row: the best time is kept (timing noise)")
    p.add_argument("--json", default=str(REPO / "bench_results" / "inversion.json"))
    p.add_argument("overrides", nargs="*", help="extra config overrides key=value")
    return p.parse_args(argv)


def method_overrides(spec: str) -> list[str]:
    method, _, option = spec.partition(":")
    out = [f"inversion.method={method}"]
    if method in ("freeinv", "mbdi") and option:
        out.append(f"inversion.transforms={option}")
    if method == "ddpm_ef" and option:
        out.append(f"inversion.noise={option}")
    return out


def frame_change(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute change between consecutive frames of x (f ...)."""
    return (x[1:] - x[:-1]).abs().mean()


def edit_probe(models, record, config, skip: int) -> dict:
    """ddpm_ef: regenerate from T_skip with the target prompt and the stored noise maps."""
    table = api.table_for(models, record)
    eps = GuidedModel.for_prompt(
        models, config.edit.target_prompt, config.edit.guidance_scale, chunk=config.runtime.unet_chunk
    )
    edited = sampler_for(record, table).sample(eps, record.latents[skip].to(models.device), start=skip).cpu()
    x0 = record.x0.float()
    zs = record.noise_maps.float()
    flat = zs.flatten(2)  # (N, f, d)
    cos = torch.nn.functional.cosine_similarity(flat[:, 1:], flat[:, :-1], dim=-1).mean()
    return {
        "edit_temporal_ratio": float(frame_change(edited.float()) / frame_change(x0)),
        "noise_map_frame_cosine": float(cos),
    }


def refusal(models, cfg) -> str | None:
    """Why the model cannot run the method of `cfg` (vidinv's own one-line error), or None."""
    try:
        record_sampler(inversion_method(cfg), models.scheduler)
    except VidinvError as err:
        return str(err)
    return None


def staged_run(models, latents, cfg, best: dict | None = None) -> dict:
    """Invert + reconstruct once, timed, with the peak of each stage (benchlib.PeakMemory: the stage
    switches between the two calls); merged with `best` (an earlier run's result): the faster run's
    record, latents and seconds, the larger peak of each stage."""
    stats = api.ReconstructionStats()
    memory = benchlib.PeakMemory(models.device, stage="inversion")
    with memory:
        start = time.perf_counter()
        record = api.invert(models, latents, cfg)
        memory.stage("reconstruction")
        recon = api.reconstruct(models, record, cfg, start=0, stats=stats)
        benchlib.synchronize(models.device)
        seconds = time.perf_counter() - start
    peaks = dict(memory.peaks_mb())
    if best is not None:
        peaks = {k: None if v is None else max(v, best["peaks"].get(k) or 0.0) for k, v in peaks.items()}
        if best["seconds"] <= seconds:
            return best | {"peaks": peaks, "runs": best["runs"] + 1}
    runs = 1 if best is None else best["runs"] + 1
    return {"record": record, "recon": recon, "stats": stats, "seconds": seconds, "peaks": peaks, "runs": runs}


def main(argv=None) -> int:
    args = parse_args(argv)
    benchlib.set_threads(args.threads)
    base = [
        f"model.device={args.device}",
        f"model.dtype={args.dtype}",
        f"video.num_frames={args.frames}",
        f"video.height={args.height}",
        f"video.width={args.width}",
        f"runtime.unet_chunk={args.unet_chunk}",
        *([f"model.pretrained={args.pretrained}"] if args.pretrained else []),
        *([f"video.path={args.video}"] if args.video else []),
        *args.overrides,
    ]
    config = load_config(args.config, base)
    configs = {  # every method's config checked before the model loads
        (spec, steps): load_config(args.config, [*base, *method_overrides(spec), f"inversion.steps={steps}"])
        for steps in args.steps
        for spec in args.methods
    }
    models = archs.models_for(config, args.arch)
    flow = is_flow_scheduler(models.scheduler)
    model = f"arch {args.arch} (random weights)" if args.arch else config.model.pretrained
    clip = load_clip(config)
    latents = encode_frames(models.vae, clip.frames, config.runtime.vae_chunk)
    roundtrip = decode_latents(models.vae, latents, config.runtime.vae_chunk)
    frames, latent_frames = len(clip.frames), int(latents.shape[0])
    print(
        f"{model}: {'transformer' if flow else 'UNet'} {archs.parameters(models.denoiser) / 1e6:.4g} M params, "
        f"{models.device} {models.dtype}, {frames} frames ({latent_frames} latent frames) at "
        f"{args.height}x{args.width}, latents {list(latents.shape)}" + ("; ddim = the flow inversion" if flow else ""),
        flush=True,
    )
    runnable = [spec for spec in args.methods if not refusal(models, configs[spec, args.steps[0]])]
    if runnable:  # warm-up, untimed: kernels, allocator, first-call caches (else the first row pays them)
        warm = load_config(args.config, [*base, *method_overrides(runnable[0]), "inversion.steps=1"])
        staged_run(models, latents, warm)
    rows = []
    for steps in args.steps:
        ddim_seconds = None
        for spec in args.methods:
            why = refusal(models, configs[spec, steps])
            if why:
                print(f"  {spec} steps={steps}: skipped ({why})", flush=True)
        specs = [spec for spec in args.methods if not refusal(models, configs[spec, steps])]
        runs: dict = {}
        for _ in range(args.repeats):  # the methods interleaved: a slower spell of the machine hits them all
            for spec in specs:
                runs[spec] = staged_run(models, latents, configs[spec, steps], runs.get(spec))
        for spec in specs:
            cfg, run = configs[spec, steps], runs[spec]
            record, recon, stats, seconds, peaks = (run[k] for k in ("record", "recon", "stats", "seconds", "peaks"))
            decoded = decode_latents(models.vae, recon, config.runtime.vae_chunk)
            per_frame = psnr_per_frame(decoded, roundtrip)
            row = {
                "method": spec,
                "steps": steps,
                "frames": frames,
                "latent_frames": latent_frames,
                "psnr_db_mean": float(per_frame.mean()),
                "psnr_db_std": float(per_frame.std()) if len(per_frame) > 1 else 0.0,
                "latent_max_abs_err": float((recon.float().cpu() - latents.float().cpu()).abs().max()),
                "seconds": seconds,
                "peak_mb": max(peaks.values()) if None not in peaks.values() else None,
                "inversion_peak_mb": peaks.get("inversion"),
                "reconstruction_peak_mb": peaks.get("reconstruction"),
                "inversion_s": record.stats.inversion_s,
                "reconstruction_s": stats.reconstruction_s,
                "inversion_frame_calls": record.stats.frame_calls,
                "reconstruction_frame_calls": stats.frame_calls,
                "frame_calls": record.stats.frame_calls + stats.frame_calls,
                "guidance_scale": record.guidance_scale,
                "repeats": args.repeats,
            }
            if spec == "ddim":
                ddim_seconds = seconds
            if ddim_seconds:
                row["time_vs_ddim"] = seconds / ddim_seconds
            if record.method == "ddpm_ef":
                row.update(
                    edit_probe(models, record, cfg, api.record_model(models, record, cfg)[1].default_start(None))
                )
            rows.append(row)
            print(f"  {spec} steps={steps}: PSNR {row['psnr_db_mean']:.2f} dB, {seconds:.2f} s", flush=True)
    if rows:
        columns = [("time_vs_ddim", "xflow", c[2]) if flow and c[0] == "time_vs_ddim" else c for c in COLUMNS]
        columns = [c for c in columns if c[0] != "latent_frames" or latent_frames != frames]
        print(benchlib.format_table(rows, benchlib.present_columns(rows, columns)))
    for row in rows:
        if row["method"].startswith("freeinv") and row.get("time_vs_ddim") is not None:
            base_name = "flow" if flow else "DDIM"
            print(f"FreeInv / {base_name} time, {row['steps']} steps, {row['method']}: {row['time_vs_ddim']:.3f}")
    extra = {
        "model": model,
        "device": str(models.device),
        "dtype": str(models.dtype),
        "pretrained": config.model.pretrained,
        "arch": args.arch,
        "denoiser_params": archs.parameters(models.denoiser),
        "flow": flow,
        "frames": frames,
        "latent_frames": latent_frames,
        "latent_shape": list(latents.shape),
        "threads": args.threads,
    }
    path = benchlib.write_results(args.json, "inversion", vars(args), rows, models.device, extra=extra)
    print(f"wrote {path}")
    return 0


COLUMNS = [  # key, header, format
    ("method", "method", "<20"),
    ("steps", "steps", ">5"),
    ("frames", "F", ">3"),
    ("latent_frames", "latent F", ">8"),
    ("psnr_db_mean", "PSNR dB", ">8.2f"),
    ("psnr_db_std", "std", ">6.2f"),
    ("seconds", "time s", ">7.2f"),
    ("inversion_frame_calls", "inv calls", ">9"),
    ("reconstruction_frame_calls", "rec calls", ">9"),
    ("frame_calls", "frame-calls", ">11"),
    ("inversion_peak_mb", "inv MB", ">8.1f"),
    ("reconstruction_peak_mb", "rec MB", ">8.1f"),
    ("time_vs_ddim", "xDDIM", ">6.2f"),
    ("edit_temporal_ratio", "edit dT", ">8.3f"),
]


if __name__ == "__main__":
    sys.exit(main())
