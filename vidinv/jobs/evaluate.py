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

`mask` (`--mask`: a mask video, a folder of mask images or one image for every frame; white = the
edited region) adds PSNR and SSIM of the region outside it. `clip` (`--clip`: a CLIP folder or hub
id) adds CLIP-F, and CLIP-T against `prompt` (`--prompt`), as a run with `eval.clip` does. The
metrics' definitions: `vidinv.metrics`, `vidinv.clip_metrics` and docs/operations.md (`vidinv eval`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidinv.errors import VidinvError

MASK_LEVEL = 128  # a mask pixel whose 8-bit luma (BT.601) is at least this is edited (white)


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
    mask_path: str | None = None,
    clip: str | None = None,
    prompt: str | None = None,
    device: str = "auto",
) -> dict:
    from vidinv.clip_metrics import ClipScores, clip_source
    from vidinv.io import read_video
    from vidinv.io.selection import FrameSelection
    from vidinv.metrics import compare_clips
    from vidinv.outputs import check_writable, write_json

    if resize and source_resize:
        raise VidinvError(
            "--resize (EDITED to SOURCE's size) and --source-resize (SOURCE to EDITED's) exclude each other"
        )
    if prompt is not None and not clip:
        raise VidinvError("--prompt is the target prompt of CLIP-T: it needs a CLIP model (--clip MODEL)")
    selection = FrameSelection(start=start, num_frames=num_frames, stride=stride)
    selection.check(source_path)  # before any work, as read_video would
    if mask_path and not Path(mask_path).exists():
        raise VidinvError(f"--mask {mask_path} does not exist")
    if clip:
        clip_source(clip, key="--clip")  # a missing model: one line before any work
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
    mask = read_mask(mask_path, frames=len(source.frames), size=(h, w)) if mask_path else None
    scores = None
    if clip:
        from vidinv.models import resolve_device

        scores = ClipScores.load(clip, prompt, key="--clip", device=resolve_device(device))
    metrics = {
        "source": str(source_path),
        "edited": str(edited_path),
        "selection": {"start": start, "num_frames": num_frames, "stride": stride},
        "source_resize": source_resize,
        "frames": len(source.frames),
        "height": h,
        "width": w,
        "fps": {"source": source.fps, "edited": edited.fps},
        **({"mask": str(mask_path)} if mask_path else {}),
        **({"clip_model": clip, "prompt": prompt} if clip else {}),
        **compare_clips(source.frames, edited.frames, mask=mask, clip=scores),
    }
    if json_path:
        write_json(json_path, metrics)
    return metrics


def read_mask(path: str, *, frames: int, size: tuple[int, int]) -> np.ndarray:
    """The edit mask as bool (n, H, W), True = edited (white: 8-bit luma >= MASK_LEVEL): a video, a
    folder of images or one image (n = 1: every frame), read as `vidinv eval` reads its clips
    (cropped to multiples of 8). It must have the compared clips' size and 1 or `frames` frames."""
    from vidinv.io import read_video
    from vidinv.io.decoders import IMAGE_SUFFIXES

    if Path(path).is_file() and Path(path).suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                pictures = [image.convert("RGB")]
        except (OSError, UnidentifiedImageError) as err:
            raise VidinvError(f"--mask {path}: not a readable image ({type(err).__name__})") from err
        video = read_video(pictures, size=None)
    else:
        video = read_video(path, size=None, decoder="pyav")
    mask = edited_region(video.frames)
    (h, w), (mh, mw) = size, mask.shape[1:]
    if (mh, mw) != (h, w):
        raise VidinvError(f"--mask {path} is {mw}x{mh}, but the compared clips are {w}x{h}: give a mask of their size")
    if len(mask) not in (1, frames):
        raise VidinvError(
            f"--mask {path}: {len(mask)} frames, but the compared clips have {frames}: give one per frame, or one image"
        )
    return mask


def edited_region(frames) -> np.ndarray:
    """Mask frames (f, 3, H, W) in [-1, 1] -> bool (f, H, W): True (edited) where the 8-bit luma
    (BT.601) is at least MASK_LEVEL."""
    from vidinv.metrics import LUMA, eight_bit

    levels = eight_bit(frames).astype(np.float64)
    luma = LUMA[0] * levels[..., 0] + LUMA[1] * levels[..., 1] + LUMA[2] * levels[..., 2]
    return luma >= MASK_LEVEL


def read_run_mask(config, stream) -> np.ndarray:
    """A run's `eval.mask` as bool (n, H, W) at the size of the run's clip (`stream`, a ClipStream),
    read as `edit.mask` is (`vidinv.io.masks.read_mask_frames`: frames selected and fitted as the
    clip's; one image is every frame's, n = 1); white = edited (`edited_region`), as `vidinv eval
    --mask`. The frame count is checked against the clip's by `check_run_mask`."""
    from vidinv.io.masks import read_mask_frames

    size = (stream.height, stream.width)
    frames = read_mask_frames(
        config.eval.mask, config.video, size=size, source_size=stream.source_size, key="eval.mask"
    )
    mask = edited_region(frames)
    if mask.shape[1:] != size:
        raise VidinvError(
            f"eval.mask {config.eval.mask} is {mask.shape[2]}x{mask.shape[1]}, the clip {size[1]}x{size[0]}"
        )
    return mask


def check_run_mask(config, mask: np.ndarray, frames: int) -> None:
    """A one-line error when the run's mask has neither 1 frame nor the clip's `frames`."""
    if len(mask) not in (1, frames):
        raise VidinvError(
            f"eval.mask {config.eval.mask}: {len(mask)} frames selected, the clip {frames}: give one per frame of the "
            "clip (selected as video.start/num_frames/stride select the clip's), or one image"
        )


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
        mask_path=args.mask,
        clip=args.clip,
        prompt=args.prompt,
    )
    print(json_text(metrics), end="")
    return 0
