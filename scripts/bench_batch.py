"""N target prompts on one clip: `vidinv batch` (one inversion, N edits) vs N separate `vidinv edit` runs.

    python scripts/bench_batch.py --prompts 4 --frames 4 --size 64 64 --steps 5      # tiny, CPU

Both run in this process through the same job code (`vidinv.batch.run_batch`, and
`vidinv.jobs.edit.run` once per prompt, each in its own folder so nothing is shared), after one
warm-up edit (imports, first model load). Expected ratio batch / separate, from the separate runs'
own stage times: (inversion + N x edit) / (N x (inversion + edit)), where inversion = encode +
inversion and edit = everything else of a run (load, edit, decode, write). Prints a table, writes
JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import benchlib
import yaml

from vidinv.batch import run_batch
from vidinv.config import load_config
from vidinv.jobs import edit

REPO = benchlib.REPO
SOURCE = "a man riding a bike"
TARGETS = ["a robot", "a bronze statue", "a knight", "a tiger", "a snowman", "an astronaut", "a painting", "a toy"]
COLUMNS = [
    ("mode", "mode", ""),
    ("runs", "edits", ""),
    ("seconds", "seconds", ".2f"),
    ("inversion_frame_calls", "inv frame-calls", ""),
    ("edit_frame_calls", "edit frame-calls", ""),
    ("ratio", "batch/separate", ".3f"),
    ("expected_ratio", "expected", ".3f"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=4, help=f"N target prompts (up to {len(TARGETS)})")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--method", default="pnp", help="edit method")
    p.add_argument("--video", default=str(REPO / "samples" / "bikes.mp4"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--json", default=str(REPO / "bench_results" / "batch.json"))
    p.add_argument("overrides", nargs="*", help="extra config overrides key=value")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    benchlib.set_threads(args.threads)
    targets = [f"{t} riding a bike" for t in TARGETS[: args.prompts]]
    overrides = [
        f"video.path={args.video}",
        f"video.num_frames={args.frames}",
        f"video.height={args.size[0]}",
        f"video.width={args.size[1]}",
        f"inversion.steps={args.steps}",
        f"inversion.source_prompt={SOURCE}",
        f"edit.method={args.method}",
        "runtime.overwrite=true",
        *args.overrides,
    ]
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))

    def separate_run(name: str, target: str) -> dict:
        config = load_config(REPO / "configs" / "demo.yaml", [*overrides, f"runtime.output_dir={work / name}"])
        config.edit.target_prompt = target
        edit.run(config, quiet=True)
        return json.loads((work / name / "metrics.json").read_text())

    separate_run("warmup", targets[0])
    started = time.perf_counter()
    runs = [separate_run(f"separate-{i}", t) for i, t in enumerate(targets)]
    separate_s = time.perf_counter() - started

    manifest = work / "manifest.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "base": str(REPO / "configs" / "demo.yaml"),
                "overrides": overrides,
                "clips": [args.video],
                "prompts": [{"source": SOURCE, "target": t} for t in targets],
                "output_dir": str(work / "batch"),
            }
        )
    )
    summary = run_batch(str(manifest))
    batch_s = summary["seconds"]

    n = len(targets)
    inversion = sum(r["seconds"]["inversion"] for r in runs) / n
    rest = sum(r["seconds"]["total"] - r["seconds"]["inversion"] for r in runs) / n
    expected = (inversion + n * rest) / (n * (inversion + rest))
    rows = [
        {
            "mode": "separate",
            "runs": n,
            "seconds": separate_s,
            "inversion_frame_calls": sum(r["frame_calls"]["inversion"] for r in runs),
            "edit_frame_calls": sum(r["frame_calls"]["edit"] for r in runs),
        },
        {
            "mode": "batch",
            "runs": n,
            "seconds": batch_s,
            "inversion_frame_calls": summary["totals"]["frame_calls"]["inversion"],
            "edit_frame_calls": summary["totals"]["frame_calls"]["edit"],
            "ratio": batch_s / separate_s,
            "expected_ratio": expected,
        },
    ]
    print(benchlib.format_table(rows, COLUMNS))
    print(f"per separate run: inversion {inversion:.2f} s, the rest {rest:.2f} s")
    extra = {"per_run_seconds": {"inversion": inversion, "rest": rest}, "work_dir": str(work)}
    path = benchlib.write_results(args.json, "batch", vars(args), rows, "cpu", extra=extra)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
