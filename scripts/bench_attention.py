"""Peak memory and time of one UNet step against frame count, per frame-attention mode, backend and chunk.

    python scripts/bench_attention.py                       # tiny UNet on CPU (a couple of minutes)
    python scripts/bench_attention.py --arch sd15 --dtype fp16 --latent 64 --frames 8 16 32 64   # on a GPU

Each row runs `run_unet` once over a clip of F frames (1 condition, 77 text tokens) with the given
mode / backend / unet_chunk and reports wall time, peak memory above the pre-call baseline
(CUDA: torch.cuda.max_memory_allocated; CPU: process RSS sampled in a thread from
/proc/self/statm), and, with --flops, achieved TFLOP/s and the fraction of --peak-tflops.
`naive` rows whose estimated score matrix exceeds --naive-cap-gb are skipped (listed as such).
Results are printed as a table and written as JSON (--json).
"""

from __future__ import annotations

import argparse
import platform

import archs
import benchlib
import torch

from vidinv.attention import install_frame_attention, remove_frame_attention, run_unet
from vidinv.attention.backends import BACKENDS, resolve_backend
from vidinv.attention.frames import FramePattern
from vidinv.models.loading import DTYPES


def first_level_heads(unet) -> tuple[int, int]:
    """(heads, channels) of the first (largest-resolution) self-attention layer."""
    for name, module in unet.named_modules():
        if name.endswith("attn1"):
            return module.heads, module.to_q.out_features
    raise ValueError("the UNet has no self-attention layer")


def naive_score_bytes(pattern: FramePattern, frames: int, chunk: int, tokens: int, heads: int, batch: int) -> int:
    """Largest score matrix (scores + probabilities, fp32) that `naive` builds at the largest level."""
    largest = 0
    for frame_pass in pattern.plan(frames, chunk):
        for bucket in frame_pass.buckets:
            s, m, k = len(bucket.queries), len(bucket.queries[0]), len(bucket.keys[0])
            largest = max(largest, 2 * 4 * batch * s * heads * (m * tokens) * (k * tokens))
    return largest


def pattern_for(mode: str, args, frames: int) -> FramePattern:
    group = args.group if args.group > 0 else frames
    return FramePattern(mode, args.keyframes, args.keyframe_stride, group)


def measure(unet, z, emb, chunk, device, args) -> dict:
    """Time and peak memory of one `run_unet` call (the last of args.repeat), and optionally FLOPs."""
    call = lambda: run_unet(unet, z, 500, emb, chunk=chunk)  # noqa: E731
    for _ in range(args.repeat):
        m = benchlib.measure(call, device)
        m.result = None  # drop the output before the next call
    row = {"seconds": m.seconds, "peak_mib": m.peak_mb}
    if args.flops:
        row["tflop"] = benchlib.count_flops(call) / 1e12
        row["tflops_s"] = row["tflop"] / row["seconds"]
        if args.peak_tflops:
            row["of_peak"] = row["tflops_s"] / args.peak_tflops
    return row


def bench(args) -> dict:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    if device.type == "cpu":
        benchlib.set_threads(args.threads)
    unet = archs.build_unet(args.arch, device, dtype)
    heads, _ = first_level_heads(unet)
    cross_dim = unet.config.cross_attention_dim
    backends = [b for b in args.backends if b != "xformers" or resolve_backend("auto", device) == "xformers"]
    tokens = args.latent * args.latent
    params = archs.parameters(unet)
    print(f"{args.arch} UNet, {params / 1e6:.1f} M params, {device} {args.dtype}, latent {args.latent}x{args.latent}")

    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(args.batch, 77, cross_dim, generator=gen).to(device, dtype)
    warm = torch.randn(args.batch, 1, 4, args.latent, args.latent, generator=gen).to(device, dtype)
    rows = []
    for mode in args.modes:
        for backend in backends:
            for chunk in args.chunks:
                for i, frames in enumerate(args.frames):
                    pattern = pattern_for(mode, args, frames)
                    handle = install_frame_attention(
                        unet,
                        mode,
                        backend,
                        keyframes=pattern.keyframes,
                        keyframe_stride=pattern.keyframe_stride,
                        group=pattern.group,
                    )
                    if i == 0:
                        run_unet(unet, warm, 500, emb)  # warm-up
                    plan = handle.pattern.plan(frames, chunk)
                    est = naive_score_bytes(pattern, frames, chunk, tokens, heads, args.batch)
                    row = {
                        "mode": mode,
                        "backend": backend,
                        "chunk": chunk,
                        "frames": frames,
                        "group": pattern.group if mode == "full" else None,
                        "passes": len(plan),
                        "max_pass": max(len(p.frames) for p in plan),
                        "naive_scores_gib": est / 2**30,
                    }
                    label = f"{mode:13s} {backend:8s} chunk={chunk:<3d} F={frames:<3d}"
                    if backend == "naive" and est > args.naive_cap_gb * 2**30:
                        row["skipped"] = f"skipped: naive scores ~{est / 2**30:.1f} GiB > cap"
                        print(f"  {label} {row['skipped']}", flush=True)
                    else:
                        z = torch.randn(args.batch, frames, 4, args.latent, args.latent, generator=gen)
                        row.update(measure(unet, z.to(device, dtype), emb, chunk, device, args))
                        print(f"  {label} {row['seconds']:8.3f} s {row['peak_mib']:9.1f} MiB", flush=True)
                    rows.append(row)
    remove_frame_attention(unet)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "arch": args.arch,
        "params": params,
        "device": device_name,
        "dtype": args.dtype,
        "latent": args.latent,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
    }


COLUMNS = [
    ("mode", "mode", "s"),
    ("backend", "backend", "s"),
    ("chunk", "chunk", "d"),
    ("frames", "F", "d"),
    ("group", "G", "d"),
    ("passes", "passes", "d"),
    ("max_pass", "max pass", "d"),
    ("seconds", "time s", ".3f"),
    ("peak_mib", "peak MiB", ".1f"),
    ("naive_scores_gib", "naive scores GiB (est)", ".3f"),
    ("tflops_s", "TFLOP/s", ".3f"),
    ("of_peak", "of peak", ".1%"),
    ("skipped", "note", "s"),
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=archs.UNET_ARCHS, default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--latent", type=int, default=16, help="latent side (64 = 512 px for SD 1.5)")
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--modes", nargs="+", default=["full"], choices=("none", "sparse_causal", "keyframe", "full"))
    parser.add_argument("--backends", nargs="+", default=["sdpa", "naive"], choices=BACKENDS)
    parser.add_argument("--chunks", type=int, nargs="+", default=[0], help="unet_chunk values (0 = whole clip)")
    parser.add_argument("--group", type=int, default=0, help="G of full mode (0 = the whole clip)")
    parser.add_argument("--keyframes", default="stride", choices=("first", "middle", "stride"))
    parser.add_argument("--keyframe-stride", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="conditions per call (2 = classifier-free guidance)")
    parser.add_argument("--repeat", type=int, default=1, help="timed calls per row (the last one is reported)")
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (0 = torch's default)")
    parser.add_argument("--naive-cap-gb", type=float, default=2.0, help="skip naive rows with larger score matrices")
    parser.add_argument("--flops", action="store_true", help="count FLOPs (one extra call per row)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="hardware peak for the 'of peak' column")
    parser.add_argument("--json", default="outputs/bench_attention.json")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    result = bench(args)
    rows = result.pop("rows")
    print()
    print(benchlib.format_table(rows, benchlib.present_columns(rows, COLUMNS)))
    path = benchlib.write_results(args.json, "attention", vars(args), rows, args.device, extra=result)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
