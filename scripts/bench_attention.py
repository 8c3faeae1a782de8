"""Peak memory and time of one UNet step against frame count, per frame-attention mode, backend and chunk.

    python scripts/bench_attention.py                       # tiny UNet on CPU (a couple of minutes)
    python scripts/bench_attention.py --arch sd15 --dtype fp16 --latent 64 --frames 8 16 32 64   # on a GPU

Each row runs `run_unet` once over a clip of F frames (1 condition, 77 text tokens) with the given
mode / backend / unet_chunk and reports wall time, peak memory above the pre-call baseline
(CUDA: torch.cuda.max_memory_allocated; CPU: process RSS sampled in a thread from
/proc/self/statm), and, with --flops, achieved TFLOP/s and the fraction of --peak-tflops.
`naive` rows whose estimated score matrix exceeds --naive-cap-gb are skipped (listed as such).
Results are printed as a table and written as JSON (--json).

The timer, the peak-memory sampler, the table and the JSON writer are separate functions so they
can be swapped for the shared `scripts/benchlib.py` helpers.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidinv.attention import install_frame_attention, remove_frame_attention, run_unet
from vidinv.attention.backends import BACKENDS, resolve_backend
from vidinv.attention.frames import FramePattern

SD15_UNET_CONFIG = {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---- generic helpers (candidates for scripts/benchlib.py) -------------------------------------


class PeakMemory:
    """Peak memory (bytes) above the baseline at entry: CUDA allocator peak, or sampled CPU RSS."""

    _malloc_fixed = False

    def __init__(self, device: torch.device, interval: float = 0.0005):
        self.device, self.interval, self.peak = device, interval, 0
        if device.type == "cpu":
            self.fix_malloc()

    @classmethod
    def fix_malloc(cls) -> None:
        """Make glibc return freed tensors to the OS (fixed mmap threshold) so RSS tracks live memory;
        otherwise a small run after a big one reuses already-resident pages and reads as ~0."""
        if cls._malloc_fixed or not sys.platform.startswith("linux"):
            return
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: allocations >= 64 KiB are mmapped
            libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
        except OSError:
            pass
        cls._malloc_fixed = True

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, self.rss())
            time.sleep(self.interval)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._max = self.rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, self.rss()) - self._base
        return False


@contextmanager
def timer(device: torch.device, result: dict):
    """Wall time of the block in seconds (CUDA synchronised) into result['seconds']."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result["seconds"] = time.perf_counter() - start


def count_flops(fn) -> int:
    """FLOPs of fn() by torch's FlopCounterMode (CPU flash SDPA counted with torch's SDPA formula)."""
    from torch.utils import flop_counter

    def cpu_flash_sdpa(query, key, value, *args, out_val=None, **kwargs):
        return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)

    cpu_flash_sdpa._get_raw = True  # takes tensors, not shapes
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_sdpa}
    with flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Plain-text table; columns are (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(k) is None else format(row[k], f) for k, _, f in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2), encoding="utf-8")


# ---- the attention benchmark ------------------------------------------------------------------


def build_unet(arch: str, device: torch.device, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    if arch == "tiny":
        from vidinv.models.tiny import TINY_UNET_CONFIG

        unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    else:
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    unet = unet.to(device)
    return (unet if dtype == torch.float32 else unet.to(dtype)).eval()


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
    timing: dict = {}
    for _ in range(args.repeat):
        with PeakMemory(device) as memory, timer(device, timing):
            run_unet(unet, z, 500, emb, chunk=chunk)
    row = {"seconds": timing["seconds"], "peak_mib": memory.peak / 2**20}
    if args.flops:
        row["tflop"] = count_flops(lambda: run_unet(unet, z, 500, emb, chunk=chunk)) / 1e12
        row["tflops_s"] = row["tflop"] / row["seconds"]
        if args.peak_tflops:
            row["of_peak"] = row["tflops_s"] / args.peak_tflops
    return row


def bench(args) -> dict:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    unet = build_unet(args.arch, device, dtype)
    heads, _ = first_level_heads(unet)
    cross_dim = unet.config.cross_attention_dim
    backends = [b for b in args.backends if b != "xformers" or resolve_backend("auto", device) == "xformers"]
    tokens = args.latent * args.latent
    params = sum(p.numel() for p in unet.parameters())
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
    parser.add_argument("--arch", choices=("tiny", "sd15"), default="tiny")
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
    parser.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0 = torch's default)")
    parser.add_argument("--naive-cap-gb", type=float, default=2.0, help="skip naive rows with larger score matrices")
    parser.add_argument("--flops", action="store_true", help="count FLOPs (one extra call per row)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="hardware peak for the 'of peak' column")
    parser.add_argument("--json", default="outputs/bench_attention.json")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    result = bench(args)
    columns = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in result["rows"])]
    print()
    print(format_table(result["rows"], columns))
    write_json(args.json, result)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
