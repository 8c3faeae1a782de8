"""Seams of long clips edited in temporal windows (runtime.window, docs/models.md "Long clips"): the warp
error of the edited clip across window borders against its interior frames, per window configuration.

    python scripts/bench_seams.py                                   # tiny-wan, samples/bikes.mp4, 29 frames
    python scripts/bench_seams.py --frames 129 --windows 5:1 9:3 17:1 0 --video BIKES_250_FRAMES.mp4

Each configuration (--windows: WINDOW:OVERLAP in latent frames; 0 = the whole clip in one call) edits the
same clip (read once, encoded once) with the same method (--method: FlowEdit by default; --steps) and
decodes it. The warp error of a frame pair (t, t + 1) is `vidinv.metrics.warp_errors_per_pair`: frame t
warped to t + 1 along the source clip's optical flow, mean absolute difference in [0, 1] over the pair's
valid pixels. Border pairs straddle a latent-frame boundary where a window starts or ends inside the clip
(latent frames b - 1 and b: frames 4 (b - 1) and 4 (b - 1) + 1; the causal VAE's latent frame j >= 1 holds
frames 4 j - 3 .. 4 j); interior pairs are all the others, and `interior_latent` those of them that
straddle another latent-frame boundary (the decoder's own step from one latent frame to the next, the
fairer comparison). Per configuration: the mean warp error of each group, border / interior, and the
unwindowed edit's mean over the same border pairs (what the clip has there without windows).

Prints a table and writes JSON (default bench_results/seams.json).
"""

from __future__ import annotations

import argparse
import time

import benchlib
import torch

from vidinv.attention.windows import Windows
from vidinv.editor import VideoEditor
from vidinv.metrics import source_flows, warp_errors_per_pair

COLUMNS = [
    ("window", "window", "s"),
    ("windows", "windows", "d"),
    ("border_pairs", "border pairs", "d"),
    ("border", "border", ".4f"),
    ("interior", "interior", ".4f"),
    ("interior_latent", "interior latent", ".4f"),
    ("ratio", "border / interior", ".2f"),
    ("ratio_latent", "border / interior latent", ".2f"),
    ("border_unwindowed", "unwindowed at border", ".4f"),
    ("seconds", "s", ".1f"),
]


def latent_of(frame: int, factor: int = 4) -> int:
    """The causal VAE's latent frame of a frame: 0 for frame 0, then `factor` frames each."""
    return 0 if frame == 0 else (frame - 1) // factor + 1


def pair_groups(frames: int, windows: Windows | None, factor: int = 4) -> tuple[list[int], list[int], list[int]]:
    """(border, interior, interior latent-boundary) pairs t of a clip (module docstring)."""
    latent_frames = latent_of(frames - 1, factor) + 1
    edges = set()
    if windows is not None and windows.count(latent_frames) > 1:
        spans = windows.slices(latent_frames)
        edges = {s.start for s in spans[1:]} | {s.stop for s in spans[:-1]}
    border, interior, latent = [], [], []
    for t in range(frames - 1):
        a, b = latent_of(t, factor), latent_of(t + 1, factor)
        if a != b and b in edges:
            border.append(t)
        else:
            interior.append(t)
            if a != b:
                latent.append(t)
    return border, interior, latent


def mean_at(errors: list[float | None], pairs: list[int]) -> float | None:
    values = [errors[t] for t in pairs if errors[t] is not None]
    return sum(values) / len(values) if values else None


def parse_window(text: str) -> tuple[int, int | None]:
    size, _, overlap = text.partition(":")
    return int(size), (int(overlap) if overlap else None)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", default="tiny-wan")
    parser.add_argument("--video", default=str(benchlib.REPO / "samples" / "bikes.mp4"))
    parser.add_argument("--frames", type=int, default=29, help="1 + 4k frames")
    parser.add_argument("--size", type=int, nargs=2, default=[128, 320], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--windows", nargs="+", default=["0", "4:2", "5:2", "6:4", "3:2", "4:0"], metavar="W:O")
    parser.add_argument("--method", default="flowedit", help="edit.method (flowedit; inversion-based on Wan: none)")
    parser.add_argument("--inversion", default="freeinv", help="inversion.method (FlowEdit: FreeInv's transforms)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="bench_results/seams.json")
    args = parser.parse_args(argv)
    benchlib.set_threads(args.threads)

    height, width = args.size
    base = {
        "model": {"pretrained": args.pretrained, "device": args.device, "dtype": args.dtype, "frame_attention": "none"},
        "inversion": {"method": args.inversion, "steps": args.steps, "source_prompt": "a man riding a bike"},
        "edit": {"method": args.method, "target_prompt": "a robot riding a bike"},
    }
    editor = VideoEditor({**base, "runtime": {"window": 0}})
    clip = editor.read(args.video, num_frames=args.frames, height=height, width=width).frames
    latents = editor.encode(clip)
    flows = source_flows(clip)
    rows, unwindowed = [], None
    for text in sorted(args.windows, key=lambda w: parse_window(w) != (0, None)):  # the whole clip first
        size, overlap = parse_window(text)
        runtime = {"window": size, "window_overlap": overlap}
        windowed = VideoEditor({**base, "runtime": runtime}, models=editor.models)
        windows = windowed.models.windows
        start = time.perf_counter()
        edited = windowed.decode(windowed.edit_latents(latents.clone(), base["edit"]["target_prompt"]).latents)
        seconds = time.perf_counter() - start
        errors = warp_errors_per_pair(edited, flows)
        if windows is None:
            unwindowed = errors
        border, interior, latent = pair_groups(len(clip), windows)
        row = {
            "window": "whole clip" if windows is None else f"{windows.size}:{windows.overlap}",
            "windows": 1 if windows is None else windows.count(latents.shape[0]),
            "border_pairs": len(border),
            "border": mean_at(errors, border),
            "interior": mean_at(errors, interior),
            "interior_latent": mean_at(errors, latent),
            "border_unwindowed": None if unwindowed is None else mean_at(unwindowed, border),
            "seconds": seconds,
            "border_at": border,
        }
        if row["border"] is not None:
            row["ratio"] = row["border"] / row["interior"]
            row["ratio_latent"] = row["border"] / row["interior_latent"] if row["interior_latent"] else None
        rows.append(row)
        print(", ".join(f"{k}={v}" for k, v in row.items() if k != "border_at"), flush=True)
    print(
        f"\nWarp error of the edited clip ({args.pretrained}, {args.frames} frames of {args.video} at"
        f" {height}x{width}, {args.method}, {args.steps} steps): across window borders vs interior pairs"
    )
    print(benchlib.format_table(rows, benchlib.present_columns(rows, COLUMNS)))
    path = benchlib.write_results(args.json, "seams", vars(args), rows, torch.device(args.device))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
