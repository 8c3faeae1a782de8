"""`vidinv eval SOURCE EDITED`: compare an edited clip (from vidinv or any other tool) with its source.

Both are read with vidinv.io (files or image folders); the edited clip is resized to the source's
size when they differ, and the frame counts must match. Prints the metrics as JSON (and writes
them to --json when given).
"""

from __future__ import annotations

from vidinv.errors import VidinvError


def evaluate(source_path: str, edited_path: str, *, json_path: str | None = None) -> dict:
    from vidinv.io import read_video
    from vidinv.metrics import compare_clips
    from vidinv.outputs import check_writable, write_json

    if json_path:
        check_writable(json_path)  # before the work
    source = read_video(source_path, size=None)
    _, _, h, w = source.frames.shape
    edited = read_video(edited_path, size=(h, w), resize="stretch")
    if len(edited.frames) != len(source.frames):
        raise VidinvError(
            f"{edited_path}: {len(edited.frames)} frames, but the source {source_path} has {len(source.frames)}"
        )
    metrics = {
        "source": str(source_path),
        "edited": str(edited_path),
        "frames": len(source.frames),
        "height": h,
        "width": w,
        "fps": {"source": source.fps, "edited": edited.fps},
        **compare_clips(source.frames, edited.frames),
    }
    if json_path:
        write_json(json_path, metrics)
    return metrics


def run_cli(args) -> int:
    from vidinv.outputs import json_text

    print(json_text(evaluate(args.source, args.edited, json_path=args.json)), end="")
    return 0
