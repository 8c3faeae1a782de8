"""Cost of one UNet frame-call and of whole edits per model family, counted (no GPU, no weights).

    python scripts/bench_flops.py                       # sd15@512, sdxl@1024, sdxl@512, sd3@1024, flux@1024
    python scripts/bench_flops.py --cases sd15:512 sdxl:1024 --frames 8 --steps 50

Each case builds the published architecture of the arch (scripts/archs.py) on the meta device
(shapes only: no memory, no compute) and counts with torch.utils.flop_counter one UNet frame-call
with the family's own text conditioning (SDXL: its added conditioning) — for sd3 / flux one
transformer frame-call with CLIP+T5 text tokens (333 / 512) as vidinv calls it — and one frame's
VAE encode and decode. Per edit method, the frame-calls of an edit of --frames frames with --steps steps come
from the planner's formulas (vidinv.plan.frame_calls, the ones tests check against the runs'
counters; freeinv inversion with guidance 1, the edit with CFG (2 rows; Flux: 1, its guidance is
embedded), the default config otherwise) and give the edit's TFLOP = frame-calls
x UNet frame-call + frames x (VAE encode + decode). `vs sd15@512` is the ratio of the UNet
frame-call to SD 1.5's at 512x512. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse

import archs
import benchlib
import torch

from vidinv.config import config_from_dict
from vidinv.plan import frame_calls

METHODS = ("pnp", "tokenflow", "fatezero")
FLOW_METHODS = ("pnp",)  # the UNet-only edits have no flow-model cost; FlowEdit has no planner formula yet
COLUMNS = [
    ("case", "case", ""),
    ("unet_params_m", "denoiser M params", ".1f"),
    ("unet_gflop", "GFLOP / frame-call", ".1f"),
    ("vs_sd15_512", "vs sd15@512", ".2f"),
    ("vae_encode_gflop", "VAE enc GFLOP", ".1f"),
    ("vae_decode_gflop", "VAE dec GFLOP", ".1f"),
    *((f"{m}_tflop", f"{m} TFLOP", ".1f") for m in METHODS),
]


def case_flops(arch: str, size: int) -> tuple[dict, int]:
    """FLOPs of one frame-call and one frame's VAE encode / decode of `arch` at size x size on the
    meta device, and its denoiser's parameter count (UNet, or flow transformer for sd3 / flux)."""
    if arch in archs.FLOW_ARCHS:
        return archs.flow_frame_flops(arch, size, size)
    with torch.device("meta"):
        models = archs.build_models(arch, "meta")
    return archs.frame_flops(models, size, size), archs.parameters(models.unet)


def edit_tflop(flops: dict, method: str, frames: int, steps: int, size: int, arch: str) -> tuple[float, int]:
    """TFLOP and UNet frame-calls of a `method` edit (freeinv inversion) of `frames` frames; Flux
    runs one row per prompt (its guidance is embedded, no CFG rows)."""
    edit = {"method": method, "target_prompt": "a robot"} | ({"guidance_scale": 1.0} if arch == "flux" else {})
    inversion = {"method": "freeinv", "steps": steps, "source_prompt": "a man"}
    config = config_from_dict({"inversion": inversion, "edit": edit, "video": {"num_frames": frames}})
    calls = sum(frame_calls(config, "edit", frames, (size // 8, size // 8)).values())
    return (calls * flops["unet_call"] + frames * (flops["vae_encode"] + flops["vae_decode"])) / 1e12, calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="+", default=["sd15:512", "sdxl:1024", "sdxl:512", "sd3:1024", "flux:1024"], help="ARCH:SIZE"
    )
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--json", default="bench_results/flops.json")
    args = parser.parse_args(argv)

    cases = [(arch, int(size)) for arch, size in (case.split(":") for case in args.cases)]
    if ("sd15", 512) not in cases:
        cases.insert(0, ("sd15", 512))  # the reference of the ratio
    rows = []
    for arch, size in cases:
        flops, params = case_flops(arch, size)
        row = {"case": f"{arch}@{size}", "arch": arch, "size": size, "unet_params_m": params / 1e6}
        row |= {"unet_gflop": flops["unet_call"] / 1e9, "flops": flops}
        row |= {"vae_encode_gflop": flops["vae_encode"] / 1e9, "vae_decode_gflop": flops["vae_decode"] / 1e9}
        for method in FLOW_METHODS if arch in archs.FLOW_ARCHS else METHODS:
            row[f"{method}_tflop"], row[f"{method}_frame_calls"] = edit_tflop(
                flops, method, args.frames, args.steps, size, arch
            )
        rows.append(row)
    reference = next(r["unet_gflop"] for r in rows if r["case"] == "sd15@512")
    for row in rows:
        row["vs_sd15_512"] = row["unet_gflop"] / reference
    print(f"UNet frame-call and edit cost ({args.frames} frames, {args.steps} steps, freeinv inversion), counted:")
    print(benchlib.format_table(rows, COLUMNS))
    path = benchlib.write_results(args.json, "flops", vars(args), rows, "cpu")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
