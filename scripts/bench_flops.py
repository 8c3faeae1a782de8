"""Cost of one UNet frame-call and of whole edits per model family, counted (no GPU, no weights).

    python scripts/bench_flops.py          # sd15@512, sdxl@1024, sdxl@512, sd3@1024, flux@1024, wan@480x832, wan@512,
                                           # wan22@704x1280, wan22_a14b@480x832, hunyuan@544x960, ltx@512x768,
                                           # cogvideox@480x720
    python scripts/bench_flops.py --cases sd15:512 sdxl:1024 wan:480x832 --frames 9 --steps 50

Each case (ARCH:SIZE or ARCH:HEIGHTxWIDTH) builds the published architecture of the arch
(scripts/archs.py) on the meta device (shapes only: no memory, no compute) and counts with
torch.utils.flop_counter one UNet frame-call with the family's own text conditioning (SDXL: its
added conditioning) — for sd3 / flux / wan one transformer frame-call with the T5-length text
tokens (333 / 512 / 512) as vidinv calls it — and one frame's VAE encode and decode. Wan 2.1 is a
native video model: its transformer sees the whole latent clip (1 + (F - 1) / 4 latent frames of
its causal VAE) in one call, so its frame-call is that call divided by the latent frames, at the
clip of --frames frames (rounded up to 1 + 4k, printed), and its VAE cost is the causal VAE's
encode of the clip and decode of its latents (group by group, on meta) divided by F. HunyuanVideo
(13B: 20 dual- + 40 single-stream blocks of width 3072, 256 LLaMA tokens, guidance embedded) is
counted the same way, its VAE by diffusers' one call over the clip; LTX-Video 0.9 (2B: 28 layers of
32 heads x 64, 128-channel latents, patch 1, 128 T5 tokens; its VAE 32x in space, 8x in time: clips of
1 + 8k frames) too; so are Wan 2.2 TI2V-5B (30 layers of width 3072 on 48-channel latents of its 16x
VAE, the timestep per token) and one expert of Wan 2.2 A14B (40 layers of width 5120; a call runs one
of its two experts); so is CogVideoX-2b (a DDPM video DiT: 30 layers of 30 heads x 64, 16-channel latents,
patch 2, 226 T5 tokens; its causal VAE 8x in space, 4x in time, by diffusers' one call over the clip).

Per edit method, the frame-calls of an edit of --frames frames with --steps steps come from the
planner's formulas (vidinv.planning.calls.frame_calls, each method's own formula, the ones tests check
against the runs' counters; freeinv inversion with guidance 1, the edit with CFG (2 rows; Flux: 1,
its guidance is embedded), the default config otherwise; Wan in latent frames) and give the edit's
TFLOP = frame-calls x UNet frame-call + frames x (VAE encode + decode). UNet models: pnp, tokenflow,
fatezero; SD3 / Flux: pnp, flowedit; Wan: flowedit (the others refuse it); CogVideoX: pnp. `vs sd15@512` is the
ratio of the frame-call to SD 1.5's at 512x512. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse

import archs
import benchlib
import torch

from vidinv.config import config_from_dict
from vidinv.models.causal_vae import latent_frame_count
from vidinv.planning import frame_calls

METHODS = ("pnp", "tokenflow", "fatezero")
FLOW_METHODS = {"sd3": ("pnp", "flowedit"), "flux": ("pnp", "flowedit"), "wan": ("flowedit",), "wan22": ("flowedit",),
                "wan22_a14b": ("flowedit",), "hunyuan": ("flowedit",),
                "ltx": ("flowedit",), "cogvideox": ("pnp",)}  # fmt: skip
COLUMNS = [
    ("case", "case", ""),
    ("frames", "F", ""),
    ("latent_frames", "latent F", ""),
    ("unet_params_m", "denoiser M params", ".1f"),
    ("unet_gflop", "GFLOP / frame-call", ".1f"),
    ("vs_sd15_512", "vs sd15@512", ".2f"),
    ("vae_encode_gflop", "VAE enc GFLOP", ".1f"),
    ("vae_decode_gflop", "VAE dec GFLOP", ".1f"),
    *((f"{m}_tflop", f"{m} TFLOP", ".1f") for m in (*METHODS, "flowedit")),
]


def parse_case(case: str) -> tuple[str, int, int]:
    """`arch:size` or `arch:HEIGHTxWIDTH` -> (arch, height, width)."""
    arch, _, size = case.partition(":")
    height, _, width = size.partition("x")
    return arch, int(height), int(width or height)


def temporal(arch: str) -> int:
    """Frames a latent frame of the arch's VAE (Wan, HunyuanVideo 4, LTX-Video 8; 1: per frame)."""
    return archs.VIDEO_FACTORS.get(arch, (1, 8))[0]


def case_frames(arch: str, frames: int) -> int:
    """The clip length of a case: `frames`, rounded up to 1 + 4k for Wan (1 + 8k for LTX-Video)."""
    factor = temporal(arch)
    if arch not in archs.VIDEO_ARCHS or (frames - 1) % factor == 0:
        return frames
    return 1 + -(-(frames - 1) // factor) * factor


def case_flops(arch: str, height: int, width: int, frames: int = 1) -> tuple[dict, int]:
    """FLOPs of one frame-call and one frame's VAE encode / decode of `arch` at height x width on the
    meta device, and its denoiser's parameter count (UNet, or flow transformer for sd3 / flux / wan;
    Wan: per latent frame of a `frames`-frame clip)."""
    if arch in archs.FLOW_ARCHS:
        return archs.flow_frame_flops(arch, height, width, frames)
    with torch.device("meta"):
        models = archs.build_models(arch, "meta")
    return archs.frame_flops(models, height, width), archs.parameters(models.unet)


def edit_tflop(flops: dict, method: str, frames: int, steps: int, hw: tuple[int, int], arch: str) -> tuple[float, int]:
    """TFLOP and UNet frame-calls of a `method` edit (freeinv inversion) of `frames` frames; Flux
    runs one row per prompt (its guidance is embedded, no CFG rows); Wan's frame-calls are latent."""
    embedded = arch in ("flux", "hunyuan")  # guidance-distilled: one row per prompt
    edit = {"method": method, "target_prompt": "a robot"} | ({"guidance_scale": 1.0} if embedded else {})
    inversion = {"method": "freeinv", "steps": steps, "source_prompt": "a man"}
    config = config_from_dict({"inversion": inversion, "edit": edit, "video": {"num_frames": frames}})
    calls_frames = latent_frame_count(frames, temporal(arch))
    spatial = archs.VIDEO_FACTORS.get(arch, (1, 8))[1]
    latent_hw, family = (hw[0] // spatial, hw[1] // spatial), archs.family_of_arch(arch)
    calls = sum(frame_calls(config, "edit", calls_frames, latent_hw, family=family).values())
    return (calls * flops["unet_call"] + frames * (flops["vae_encode"] + flops["vae_decode"])) / 1e12, calls


DEFAULT_CASES = ["sd15:512", "sdxl:1024", "sdxl:512", "sd3:1024", "flux:1024", "wan:480x832", "wan:512",
                 "wan22:704x1280", "wan22_a14b:480x832", "hunyuan:544x960", "ltx:512x768",
                 "cogvideox:480x720"]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="ARCH:SIZE or ARCH:HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=8, help="frames per edit (Wan: rounded up to 1 + 4k, LTX 1 + 8k)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--json", default="bench_results/flops.json")
    args = parser.parse_args(argv)

    cases = [parse_case(case) for case in args.cases]
    if ("sd15", 512, 512) not in cases:
        cases.insert(0, ("sd15", 512, 512))  # the reference of the ratio
    rows = []
    for arch, height, width in cases:
        frames = case_frames(arch, args.frames)
        flops, params = case_flops(arch, height, width, frames)
        size = f"{height}" if height == width else f"{height}x{width}"
        row = {"case": f"{arch}@{size}", "arch": arch, "size": height if height == width else [height, width]}
        row |= {"height": height, "width": width, "frames": frames, "unet_params_m": params / 1e6}
        if arch in archs.VIDEO_ARCHS:
            row["latent_frames"] = latent_frame_count(frames, temporal(arch))
        row |= {"unet_gflop": flops["unet_call"] / 1e9, "flops": flops}
        row |= {"vae_encode_gflop": flops["vae_encode"] / 1e9, "vae_decode_gflop": flops["vae_decode"] / 1e9}
        for method in FLOW_METHODS.get(arch, METHODS):
            row[f"{method}_tflop"], row[f"{method}_frame_calls"] = edit_tflop(
                flops, method, frames, args.steps, (height, width), arch
            )
        rows.append(row)
    reference = next(r["unet_gflop"] for r in rows if r["case"] == "sd15@512")
    for row in rows:
        row["vs_sd15_512"] = row["unet_gflop"] / reference
    print(f"UNet frame-call and edit cost ({args.frames} frames, {args.steps} steps, freeinv inversion), counted:")
    if any(r["frames"] != args.frames for r in rows):
        print(
            f"(Wan: {case_frames('wan', args.frames)} frames, the nearest 1 + 4k; LTX-Video:"
            f" {case_frames('ltx', args.frames)}, the nearest 1 + 8k; their frame-calls are per latent frame)"
        )
    print(benchlib.format_table(rows, benchlib.present_columns(rows, COLUMNS)))
    path = benchlib.write_results(args.json, "flops", vars(args), rows, "cpu")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
