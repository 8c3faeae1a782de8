"""`vidinv eval SOURCE EDITED`: compare an edited clip (from vidinv or any other tool) with its source.

Both are read with vidinv.io (files or image folders), by PyAV as `vidinv edit` reads its clip.
`start`, `num_frames`, `stride` (`--start`, `--num-frames`, `--stride`) select SOURCE's frames as
`video.start/num_frames/stride` do in the edit (checked by the same `FrameSelection`), so an edit
can be compared with its original, full-length clip. They do not apply to EDITED, which is read
whole: an edit's output already holds only the selected frames (its frame 0 is SOURCE's frame
`start`). `source_resize` (`--source-resize MODE`) fits the selected source frames to EDITED's size
as the edit fits its clip to `video.height/width` with `video.resize=MODE`; `resize` (`--resize`)
instead stretches an edited clip of another size to the source's. Frame counts and sizes must then
match (a one-line error otherwise). Prints the metrics as JSON (and writes them to --json).

Agreement with the run's metrics.json (`vidinv.metrics.ClipComparison` measures both clips as
their 8-bit pictures): given the original clip with the run's selection (and `--source-resize` when
the run resized), and the run's lossless `edited.mkv` (runtime.codec=ffv1) or `edited/` PNG
folder, the metrics are the run's exactly. An H.264 `edited.mp4` holds the pictures up to the
codec's error d (decoded minus 8-bit picture): the source metrics stay exact, `warp_error_edited`
moves by at most the warp error of d itself along the same flow (mean over pairs and valid pixels
of |warp(d_i) - d_i+1|), `frame_change_edited` by at most d's own frame change, and the PSNR by d.
Giving the run's `source.mp4` as SOURCE adds the codec's error to the source too (its flow as well).
"""

from __future__ import annotations

from vidinv.errors import VidinvError


def evaluate(
    source_path: str,
    edited_path: str,
    *,
    json_path: str | None = None,
    resize: bool = False,
    start: int = 0,
    num_frames: int | None = None,
    stride: int = 1,
    source_resize: str | None = None,
) -> dict:
    from vidinv.io import read_video
    from vidinv.io.selection import FrameSelection
    from vidinv.metrics import compare_clips
    from vidinv.outputs import check_writable, write_json

    if resize and source_resize:
        raise VidinvError(
            "--resize (EDITED to SOURCE's size) and --source-resize (SOURCE to EDITED's) exclude each other"
        )
    selection = FrameSelection(start=start, num_frames=num_frames, stride=stride)
    selection.check(source_path)  # before any work, as read_video would
    if json_path:
        check_writable(json_path)  # before the work
    pick = dict(start=start, num_frames=num_frames, stride=stride, decoder="pyav")
    if source_resize:
        edited = read_video(edited_path, size=None, decoder="pyav")
        source = read_video(source_path, size=tuple(edited.frames.shape[2:]), resize=source_resize, **pick)
    else:
        source = read_video(source_path, size=None, **pick)
        size = tuple(source.frames.shape[2:]) if resize else None
        edited = read_video(edited_path, size=size, resize="stretch", decoder="pyav")
    _, _, h, w = source.frames.shape
    if edited.frames.shape[2:] != (h, w):
        eh, ew = edited.frames.shape[2:]
        raise VidinvError(
            f"{edited_path} is {ew}x{eh}, but the source {source_path} is {w}x{h}; pass --resize to stretch the "
            "edited clip to the source's size, or --source-resize MODE to fit the source to the edited clip's"
        )
    if len(edited.frames) != len(source.frames):
        count = "" if num_frames is None else f" --num-frames {num_frames}"
        chosen = "" if selection == FrameSelection() else f" with --start {start}{count} --stride {stride}"
        raise VidinvError(
            f"{edited_path}: {len(edited.frames)} frames, but the source {source_path} has {len(source.frames)}{chosen}"
        )
    metrics = {
        "source": str(source_path),
        "edited": str(edited_path),
        "selection": {"start": start, "num_frames": num_frames, "stride": stride},
        "source_resize": source_resize,
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

    metrics = evaluate(
        args.source,
        args.edited,
        json_path=args.json,
        resize=args.resize,
        start=args.start,
        num_frames=args.num_frames,
        stride=args.stride,
        source_resize=args.source_resize,
    )
    print(json_text(metrics), end="")
    return 0
