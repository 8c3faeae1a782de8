"""`vidinv edit`: invert the clip with the source prompt, edit it towards the target prompt, write it all.

Run folder: edited.mp4, source.mp4 (the frames as processed), side_by_side.mp4 (source | edited)
(.mkv with runtime.codec=ffv1, PNG folders with png), config.yaml (resolved), metrics.json, inversion/ (the record, reused when config and clip match).

The clip streams through in chunks of `runtime.vae_chunk` frames: read + encoded, then, after the
edit, decoded chunk by chunk beside the source read again, each chunk written to source.mp4,
edited.mp4 and side_by_side.mp4 and added to the clip comparison. Host
memory follows the record (latent-sized), not the clip's pixels.
"""

from __future__ import annotations

import time
from pathlib import Path

from vidinv.config import Config, to_yaml
from vidinv.errors import VidinvError
from vidinv.interrupts import Interrupted
from vidinv.io.writing import video_filename
from vidinv.jobs.common import open_run_dir, record_dir_for
from vidinv.outputs import write_json, write_text
from vidinv.run_lock import releases_run_locks

VIDEOS = ("edited", "source", "side_by_side")


def writes(codec: str = "h264") -> list[str]:
    """The names the edit job writes in its run folder (the videos' suffix follows runtime.codec)."""
    return [video_filename(stem, codec) for stem in VIDEOS] + ["metrics.json"]


WRITES = writes()  # with the default codec


def release_tensors(record):
    """`record` without its whole-clip tensors (latents, noise maps), which the job no longer reads
    once the edit is done: they are not held beside the decode."""
    import torch

    record.latents, record.noise_maps = torch.empty(0), None
    return record


@releases_run_locks
def run(config: Config, *, quiet: bool = False) -> str:
    from vidinv.editor import VideoEditor, peak_memory_mb, reset_peak_memory
    from vidinv.io import side_by_side
    from vidinv.io.masks import check_mask_frames
    from vidinv.io.writing import VideoWriter
    from vidinv.jobs.evaluate import check_run_mask, read_run_mask
    from vidinv.jobs.streaming import audio_for, decode_chunks, encode_stream, stream_for
    from vidinv.metrics import ClipComparison
    from vidinv.models import resolve_device

    started = time.perf_counter()
    if config.eval.clip:
        from vidinv.clip_metrics import clip_source

        clip_source(config.eval.clip, key="eval.clip")  # a missing CLIP model: one line before any work
    if config.eval.mask and not Path(config.eval.mask).exists():
        raise VidinvError(f"eval.mask {config.eval.mask} does not exist")
    out = open_run_dir(config, "edit", writes(config.runtime.codec))
    reset_peak_memory(resolve_device(config.model.device))  # this run's peak (batch items, app requests)
    editor = VideoEditor(config, progress=not quiet)
    stream = stream_for(config)
    mask = read_run_mask(config, stream) if config.eval.mask else None  # PSNR/SSIM outside it, as `eval --mask`
    region = edit_region(config, stream)  # edit.mask: one-line errors before loading
    t0 = time.perf_counter()
    models = editor.models
    load_s = time.perf_counter() - t0
    fps = config.runtime.fps or stream.fps
    edited_name, source_name, both_name = (video_filename(stem, config.runtime.codec) for stem in VIDEOS)
    with VideoWriter(out / source_name, fps) as sources:  # renamed to source.mp4 only at the end
        t0 = time.perf_counter()
        latents = encode_stream(models, stream, writers=[sources], progress=not quiet)
        if mask is not None:
            check_run_mask(config, mask, stream.num_frames)  # before the inversion
        if region is not None:
            check_mask_frames(region, stream.num_frames)
        sources.finish()  # the encoder flushed now: its lookahead frames are not held beside the decode
        encode_s = time.perf_counter() - t0
        record_dir = record_dir_for(config, out)
        try:
            control = editor.control(stream.chunks())  # ControlNet conditions, the clip read again (None without)
            result = editor.edit_latents(
                latents, record_dir=record_dir, control=control, release_latents=True, mask=region
            )
        except Interrupted as stop:
            if stop.stage == "edit":
                stop.detail = f"the inversion record in {record_dir} is kept — rerun the same command to reuse it"
            raise
        del latents, control
        record = release_tensors(result.record)  # saved in record_dir; only its metadata is read below
        memory = result.peak_memory
        write_text(out / "config.yaml", to_yaml(config))
        t0 = time.perf_counter()
        clip = None
        if config.eval.clip:  # CLIP-T (edit.target_prompt) and CLIP-F in metrics.json, as `vidinv eval --clip`
            from vidinv.clip_metrics import ClipScores

            clip = ClipScores.load(config.eval.clip, config.edit.target_prompt, key="eval.clip", device=models.device)
        if mask is None and result.mask is not None:  # a masked edit: the unedited region's metrics too
            mask = result.mask.edited_pixels(stream.num_frames, (stream.height, stream.width))
        comparison = ClipComparison(mask=mask, clip=clip)
        audio = audio_for(config, stream, stream.num_frames, fps)
        with (
            VideoWriter(out / edited_name, fps, audio=audio) as edited,
            VideoWriter(out / both_name, fps, audio=audio) as both,
        ):
            for source, (frames,) in decode_chunks(models, stream, result.latents, progress=not quiet):
                edited.write(frames)
                both.write(side_by_side(source, frames))
                comparison.update(source, frames)
    decode_s = time.perf_counter() - t0
    memory["after_decode_mb"] = round(peak_memory_mb(models.device), 1)
    consistency = comparison.result()
    f, _, h, w = stream.num_frames, 3, stream.height, stream.width
    total_s = time.perf_counter() - started
    metrics = {
        "frames": f,
        "height": h,
        "width": w,
        "fps": fps,
        "device": str(models.device),
        "dtype": str(models.dtype).replace("torch.", ""),
        "source_prompt": record.source_prompt,
        "target_prompt": config.edit.target_prompt,
        **({"clip_model": config.eval.clip} if config.eval.clip else {}),  # temporal_consistency's clip_t/f
        "inversion": {"method": record.method, "steps": record.steps, "guidance_scale": record.guidance_scale},
        "edit": {"method": config.edit.method, "guidance_scale": config.edit.guidance_scale, **result.stats.to_dict()},
        "frame_attention": config.model.frame_attention,
        "record_reused": result.record_reused,
        # temporal_consistency's *_unedited: outside eval.mask, or the region a masked edit may not change
        **({"mask": config.eval.mask or result.mask.origin} if mask is not None else {}),
        "temporal_consistency": consistency,  # the clip comparison of `vidinv eval` (`ClipComparison`)
        "per_frame": comparison.per_frame(),  # warp error of each consecutive pair, source and edited
        "frame_calls": {
            "inversion": 0 if result.record_reused else record.stats.frame_calls or 0,
            "edit": result.stats.frame_calls,
        },
        "peak_memory": memory,
        "seconds": {
            "load": round(load_s, 4),
            "read+encode": round(encode_s, 4),
            **result.seconds,
            "decode+write+metrics": round(decode_s, 4),
            "total": round(total_s, 4),
        },
        "seconds_per_frame": round(total_s / f, 4),
    }
    write_json(out / "metrics.json", metrics)
    return (
        f"vidinv: edited {f} frames {h}x{w} ({inversion_summary(record, result.record_reused)}; "
        f"{config.edit.method} edit, {record.steps} steps) -> {out / edited_name} (+ {both_name}, metrics.json) "
        f"in {total_s:.1f}s; warp error source {consistency['warp_error_source']:.4f}, "
        f"edited {consistency['warp_error_edited']:.4f}"
    )


def edit_region(config: Config, stream):
    """`edit.mask` read as a pixel mask of the clip's frames (`vidinv.io.masks.read_mask`), or None."""
    from vidinv.io.masks import read_mask

    if config.edit.mask is None:
        return None
    size = (stream.height, stream.width)
    return read_mask(config.edit.mask, config.video, size=size, source_size=stream.source_size)


def inversion_summary(record, reused: bool) -> str:
    """How the edit got its source: "freeinv inversion, computed", or "inversion-free" (FlowEdit's
    record holds only the clip: method "none")."""
    if record.method == "none":
        return "inversion-free"
    return f"{record.method} inversion, {'reused' if reused else 'computed'}"
