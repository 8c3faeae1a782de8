"""`vidinv reconstruct`: invert (or load the record), regenerate with the source prompt, measure.

Writes reconstruction.mp4 and metrics.json:
    psnr_latent_db  reconstructed vs inverted latents (data range: the input latents' peak-to-peak)
    psnr_db         reconstructed frames vs the VAE round trip of the input (the inversion's own error)
    psnr_input_db   reconstructed frames vs the input frames (inversion + VAE)
"""

from __future__ import annotations

import time

from vidinv.config import Config
from vidinv.jobs.invert import invert_clip
from vidinv.metrics import psnr, psnr_per_frame
from vidinv.outputs import write_json

WRITES = ["reconstruction.mp4", "metrics.json"]


def run(config: Config, *, quiet: bool = False) -> str:
    from vidinv.inversion import get_inversion_method, reconstruct
    from vidinv.io import write_video
    from vidinv.models import decode_latents

    started = time.perf_counter()
    job = invert_clip(config, quiet=quiet, writes=WRITES)
    models, record, rt = job.models, job.record, config.runtime
    stats: dict = {}
    recon = reconstruct(models, record, config, progress=not quiet, stats=stats)
    t0 = time.perf_counter()
    frames = decode_latents(models.vae, recon, rt.vae_chunk, progress=not quiet)
    roundtrip = decode_latents(models.vae, job.latents, rt.vae_chunk, progress=not quiet)
    t1 = time.perf_counter()
    fps = rt.fps or job.clip.fps
    write_video(job.out / "reconstruction.mp4", frames, fps)

    x0 = job.latents.float().cpu()
    latent_range = float(x0.max() - x0.min())
    per_frame = psnr_per_frame(frames, roundtrip)
    metrics = {
        "method": record.method,
        "steps": record.steps,
        "guidance_scale": record.guidance_scale,
        "start_step": stats["start"],
        "record_reused": job.reused,
        "frames": int(frames.shape[0]),
        "latent_shape": list(job.latents.shape),
        "psnr_latent_db": psnr(recon.float().cpu(), x0, data_range=latent_range),
        "psnr_db": psnr(frames, roundtrip),
        "psnr_db_per_frame": [round(float(v), 4) for v in per_frame],
        "psnr_input_db": psnr(frames, job.clip.frames),
        "latent_data_range": latent_range,
        "frame_calls": {
            "inversion": 0 if job.reused else record.stats.get("frame_calls", 0),
            "reconstruction": stats["frame_calls"],
        },
        "seconds": {
            **job.seconds,
            "reconstruction": stats["reconstruction_s"],
            "decode": round(t1 - t0, 4),
            "total": round(time.perf_counter() - started, 4),
        },
        "record": {"inversion_s": record.stats.get("inversion_s"), "frame_calls": record.stats.get("frame_calls")},
    }
    metrics.update(get_inversion_method(record.method)(config.inversion).describe(record))
    write_json(job.out / "metrics.json", metrics)
    return (
        f"vidinv: {record.method} reconstruction of {metrics['frames']} frames, {record.steps} steps "
        f"({'record reused' if job.reused else 'inverted'}): PSNR {metrics['psnr_db']:.2f} dB vs VAE round trip, "
        f"{metrics['psnr_input_db']:.2f} dB vs input, latents {metrics['psnr_latent_db']:.2f} dB; "
        f"wrote {job.out}/ in {metrics['seconds']['total']:.1f}s"
    )
