"""Time and peak memory of VAE encode+decode, chunked vs whole clip, as the clip grows.

    python scripts/bench_vae.py --arch tiny --frames 8 32 128 --size 128 256 --chunk 8 --device cpu

--arch builds a VAE with random weights (tiny: the built-in tiny model's VAE; sd15: SD 1.5's
AutoencoderKL shape); without it the VAE of --pretrained is loaded. Results go to --json.
"""

from __future__ import annotations

import argparse
from functools import partial

import archs
import benchlib
import torch

from vidinv.models import decode_latents, encode_frames, load_models, resolve_device, resolve_dtype

COLUMNS = ["frames", "mode", "chunk", "seconds", "frames_per_s", "peak_mb", "peak_mb_per_frame"]


def build_vae(args, device: torch.device, dtype: torch.dtype):
    if args.arch is None:
        return load_models(args.pretrained, dtype=args.dtype, device=str(device)).vae
    return archs.build_vae(args.arch, device, dtype)


def round_trip(vae, frames: torch.Tensor, chunk: int) -> torch.Tensor:
    """frames -> latents -> frames, `chunk` frames per VAE call (0 = the whole clip)."""
    return decode_latents(vae, encode_frames(vae, frames, chunk), chunk)


def row(num_frames: int, mode: str, chunk: int, m: benchlib.Measurement) -> dict:
    per_frame = None if m.peak_mb is None else m.peak_mb / num_frames
    return {"frames": num_frames, "mode": mode, "chunk": chunk, "seconds": m.seconds,
            "frames_per_s": num_frames / m.seconds, "peak_mb": m.peak_mb, "peak_mb_per_frame": per_frame}  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--size", type=int, nargs=2, default=[128, 256], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--chunk", type=int, default=8, help="frames per VAE call in the chunked mode")
    archs.add_model_args(parser, what="VAE")
    parser.add_argument("--json", default="bench_results/vae.json")
    args = parser.parse_args(argv)

    benchlib.set_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    vae = build_vae(args, device, dtype)
    height, width = args.size
    round_trip(vae, torch.zeros(1, 3, height, width), 1)  # warm-up: kernels, allocator

    rows = []
    for num_frames in args.frames:
        frames = torch.rand(num_frames, 3, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
        for mode, chunk in (("chunked", args.chunk), ("whole", 0)):
            m = benchlib.measure(partial(round_trip, vae, frames, chunk), device)
            rows.append(row(num_frames, mode, chunk or num_frames, m))
            del m  # drop the decoded clip before the next measurement
            print(", ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)

    print(f"\nVAE encode+decode, {height}x{width}, {dtype}, {device} ({args.arch or args.pretrained})")
    print(benchlib.format_table(rows, COLUMNS))
    path = benchlib.write_results(args.json, "vae", vars(args), rows, device)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
