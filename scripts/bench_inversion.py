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

Prints a table and writes JSON (default bench_results/inversion.json).
"""

from __future__ import annotations

import argparse
import sys

import archs
import benchlib
import torch

from vidinv.config import load_config
from vidinv.inversion import api
from vidinv.inversion.ddpm_ef import ddpm_ef_sample
from vidinv.inversion.denoiser import GuidedModel
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
    edited = ddpm_ef_sample(eps, record.latents[skip].to(models.device), table, record.noise_maps, start=skip).cpu()
    x0 = record.x0.float()
    zs = record.noise_maps.float()
    flat = zs.flatten(2)  # (N, f, d)
    cos = torch.nn.functional.cosine_similarity(flat[:, 1:], flat[:, :-1], dim=-1).mean()
    return {
        "edit_temporal_ratio": float(frame_change(edited.float()) / frame_change(x0)),
        "noise_map_frame_cosine": float(cos),
    }


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
    models = archs.models_for(config, args.arch)
    clip = load_clip(config)
    latents = encode_frames(models.vae, clip.frames, config.runtime.vae_chunk)
    roundtrip = decode_latents(models.vae, latents, config.runtime.vae_chunk)
    rows = []
    for steps in args.steps:
        ddim_seconds = None
        for spec in args.methods:
            cfg = load_config(args.config, [*base, *method_overrides(spec), f"inversion.steps={steps}"])
            stats: dict = {}

            def run(cfg=cfg, stats=stats):
                record = api.invert(models, latents, cfg)
                return record, api.reconstruct(models, record, cfg, start=0, stats=stats)

            m = benchlib.measure(run, models.device)
            (record, recon), seconds = m.result, m.seconds
            frames = decode_latents(models.vae, recon, config.runtime.vae_chunk)
            per_frame = psnr_per_frame(frames, roundtrip)
            row = {
                "method": spec,
                "steps": steps,
                "psnr_db_mean": float(per_frame.mean()),
                "psnr_db_std": float(per_frame.std()) if len(per_frame) > 1 else 0.0,
                "latent_max_abs_err": float((recon.float().cpu() - latents.float().cpu()).abs().max()),
                "seconds": seconds,
                "peak_mb": m.peak_mb,
                "inversion_s": record.stats["inversion_s"],
                "reconstruction_s": stats["reconstruction_s"],
                "frame_calls": record.stats["frame_calls"] + stats["frame_calls"],
                "guidance_scale": record.guidance_scale,
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
    print(benchlib.format_table(rows, COLUMNS))
    extra = {
        "device": str(models.device),
        "dtype": str(models.dtype),
        "pretrained": config.model.pretrained,
        "frames": int(latents.shape[0]),
        "latent_shape": list(latents.shape),
        "threads": args.threads,
    }
    path = benchlib.write_results(args.json, "inversion", vars(args), rows, models.device, extra=extra)
    print(f"wrote {path}")
    return 0


COLUMNS = [  # key, header, format
    ("method", "method", "<20"),
    ("steps", "steps", ">5"),
    ("psnr_db_mean", "PSNR dB", ">8.2f"),
    ("psnr_db_std", "std", ">6.2f"),
    ("seconds", "time s", ">7.2f"),
    ("frame_calls", "frame-calls", ">11"),
    ("time_vs_ddim", "xDDIM", ">6.2f"),
    ("edit_temporal_ratio", "edit dT", ">8.3f"),
]


if __name__ == "__main__":
    sys.exit(main())
