"""`vidinv edit`: invert the clip with the source prompt, edit it towards the target prompt, write it all.

Run folder: edited.mp4, source.mp4 (the frames as processed), side_by_side.mp4 (source | edited),
config.yaml (resolved), metrics.json, inversion/ (the record, reused when config and clip match).
"""

from __future__ import annotations

import time

from vidinv.config import Config, to_yaml
from vidinv.jobs.invert import open_run_dir, record_dir_for
from vidinv.outputs import write_json, write_text

WRITES = ["edited.mp4", "source.mp4", "side_by_side.mp4", "metrics.json"]


def run(config: Config, *, quiet: bool = False) -> str:
    from vidinv.editor import VideoEditor
    from vidinv.io import side_by_side, write_video
    from vidinv.metrics import compare_clips

    started = time.perf_counter()
    out = open_run_dir(config, WRITES)
    editor = VideoEditor(config, progress=not quiet)
    t0 = time.perf_counter()
    clip = editor.read()
    models = editor.models
    load_s = time.perf_counter() - t0
    result = editor.edit(clip.frames, record_dir=record_dir_for(config, out))
    write_text(out / "config.yaml", to_yaml(config))
    t0 = time.perf_counter()
    fps = config.runtime.fps or clip.fps
    write_video(out / "source.mp4", clip.frames, fps)
    write_video(out / "edited.mp4", result.frames, fps)
    write_video(out / "side_by_side.mp4", side_by_side(clip.frames, result.frames), fps)
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    consistency = compare_clips(clip.frames, result.frames)
    f, _, h, w = clip.frames.shape
    record = result.record
    metrics = {
        "frames": f,
        "height": h,
        "width": w,
        "fps": fps,
        "device": str(models.device),
        "dtype": str(models.dtype).replace("torch.", ""),
        "source_prompt": record.source_prompt,
        "target_prompt": config.edit.target_prompt,
        "inversion": {"method": record.method, "steps": record.steps, "guidance_scale": record.guidance_scale},
        "edit": {"method": config.edit.method, "guidance_scale": config.edit.guidance_scale, **result.stats},
        "frame_attention": config.model.frame_attention,
        "record_reused": result.record_reused,
        "temporal_consistency": {**consistency, "metrics_s": round(time.perf_counter() - t0, 4)},
        "unet_calls": {
            "inversion": 0 if result.record_reused else record.stats.get("unet_calls", 0),
            "edit": result.stats["unet_calls"],
        },
        "seconds": {
            "load": round(load_s, 4),
            **result.seconds,
            "write": round(write_s, 4),
            "total": round(time.perf_counter() - started, 4),
        },
        "seconds_per_frame": round((time.perf_counter() - started) / f, 4),
    }
    write_json(out / "metrics.json", metrics)
    return (
        f"vidinv: edited {f} frames {h}x{w} ({record.method} inversion, {'reused' if result.record_reused else 'computed'}; "
        f"{config.edit.method} edit, {record.steps} steps) -> {out / 'edited.mp4'} (+ side_by_side.mp4, metrics.json) "
        f"in {metrics['seconds']['total']:.1f}s; warp error source {consistency['warp_error_source']:.4f}, "
        f"edited {consistency['warp_error_edited']:.4f}"
    )
