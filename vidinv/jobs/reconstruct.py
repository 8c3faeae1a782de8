"""`vidinv reconstruct`: invert (or load the record), regenerate with the source prompt, measure.

Writes reconstruction.mp4 (.mkv / a PNG folder, see runtime.codec) and metrics.json:
    psnr_latent_db  reconstructed vs inverted latents (data range: the input latents' peak-to-peak)
    psnr_db         reconstructed frames vs the VAE round trip of the input (the inversion's own error)
    psnr_input_db   reconstructed frames vs the input frames (inversion + VAE)
"""

from __future__ import annotations

import time

import torch

from vidinv.config import Config
from vidinv.jobs.common import invert_clip
from vidinv.metrics import psnr, psnr_per_frame
from vidinv.outputs import write_json
from vidinv.run_lock import releases_run_locks


def measure(models, stream, recon: torch.Tensor, latents: torch.Tensor, *, writer=None, progress=False) -> dict:
    """The reconstruction's PSNRs (module docstring) as metrics.json holds them: the reconstructed
    latents `recon` and the input `latents` (f, c, h, w) decoded chunk by chunk beside the clip
    `stream`'s frames; each decoded chunk also goes to `writer` (a `VideoWriter`), when given.
    `vidinv tune` measures its candidates with it."""
    from vidinv.jobs.streaming import decode_chunks

    per_frame, per_frame_input = [], []  # vs the VAE round trip, vs the input frames
    for source, (decoded, roundtrip) in decode_chunks(models, stream, recon.cpu(), latents, progress=progress):
        if writer is not None:
            writer.write(decoded)
        per_frame.append(psnr_per_frame(decoded, roundtrip))
        per_frame_input.append(psnr_per_frame(decoded, source))
    per_frame, per_frame_input = torch.cat(per_frame), torch.cat(per_frame_input)
    x0 = latents.float().cpu()
    latent_range = float(x0.max() - x0.min())
    return {
        "psnr_latent_db": psnr(recon.float().cpu(), x0, data_range=latent_range),
        "psnr_db": float(per_frame.mean()),
        "psnr_db_per_frame": [round(float(v), 4) for v in per_frame],
        "psnr_input_db": float(per_frame_input.mean()),
        "latent_data_range": latent_range,
    }


@releases_run_locks
def run(config: Config, *, quiet: bool = False) -> str:
    from vidinv.inversion import ReconstructionStats, get_inversion_method, reconstruct
    from vidinv.io.writing import VideoWriter, video_filename

    started = time.perf_counter()
    name = video_filename("reconstruction", config.runtime.codec)
    job = invert_clip(config, command="reconstruct", quiet=quiet, writes=[name, "metrics.json"])
    models, record, rt = job.models, job.record, config.runtime
    stats = ReconstructionStats()
    recon = reconstruct(models, record, config, progress=not quiet, stats=stats, control=job.control)
    t0 = time.perf_counter()
    fps = rt.fps or job.stream.fps
    with VideoWriter(job.out / name, fps) as writer:
        measured = measure(models, job.stream, recon, job.latents, writer=writer, progress=not quiet)
    t1 = time.perf_counter()
    metrics = {
        "method": record.method,
        "steps": record.steps,
        "guidance_scale": record.guidance_scale,
        "start_step": stats.start_step,
        "record_reused": job.reused,
        "frames": job.stream.num_frames,
        "latent_shape": list(job.latents.shape),
        **measured,
        "frame_calls": {
            "inversion": 0 if job.reused else record.stats.frame_calls or 0,
            "reconstruction": stats.frame_calls,
        },
        "seconds": {
            **job.seconds,
            "reconstruction": stats.reconstruction_s,
            "decode": round(t1 - t0, 4),
            "total": round(time.perf_counter() - started, 4),
        },
        "record": {"inversion_s": record.stats.inversion_s, "frame_calls": record.stats.frame_calls},
    }
    metrics.update(get_inversion_method(record.method)(config.inversion).describe(record))
    write_json(job.out / "metrics.json", metrics)
    return (
        f"vidinv: {record.method} reconstruction of {metrics['frames']} frames, {record.steps} steps "
        f"({'record reused' if job.reused else 'inverted'}): PSNR {metrics['psnr_db']:.2f} dB vs VAE round trip, "
        f"{metrics['psnr_input_db']:.2f} dB vs input, latents {metrics['psnr_latent_db']:.2f} dB; "
        f"wrote {job.out}/ in {metrics['seconds']['total']:.1f}s"
    )
