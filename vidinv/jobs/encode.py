"""`vidinv encode`: decode the clip, VAE round trip in chunks, write the videos and the PSNR.

The first stage of every edit on its own: it shows what the VAE alone costs in quality at the
configured resolution, before any inversion error.
"""

from __future__ import annotations

import time

import torch

from vidinv.config import Config, to_yaml
from vidinv.jobs.common import prepare_run_dir
from vidinv.metrics import psnr_per_frame
from vidinv.outputs import write_json, write_text
from vidinv.run_lock import releases_run_locks


@releases_run_locks
def run(config: Config, *, quiet: bool = False) -> str:
    from vidinv.editor import load_models_for
    from vidinv.io.writing import VideoWriter, video_filename
    from vidinv.jobs.streaming import decode_chunks, encode_stream, stream_for

    started = time.perf_counter()
    rt = config.runtime
    source_name, roundtrip_name = (video_filename(stem, rt.codec) for stem in ("source", "roundtrip"))
    out = prepare_run_dir(rt.output_dir, rt.overwrite, [source_name, roundtrip_name, "metrics.json"])
    models = load_models_for(config)
    stream = stream_for(config)
    fps = rt.fps or stream.fps
    t0 = time.perf_counter()
    with VideoWriter(out / source_name, fps) as source:
        latents = encode_stream(models, stream, writers=[source], progress=not quiet)
    t1 = time.perf_counter()
    per_frame = []
    with VideoWriter(out / roundtrip_name, fps) as writer:
        for frames, (roundtrip,) in decode_chunks(models, stream, latents, progress=not quiet):
            writer.write(roundtrip)
            per_frame.append(psnr_per_frame(roundtrip, frames))
    t2 = time.perf_counter()
    write_text(out / "config.yaml", to_yaml(config))
    f, h, w = stream.num_frames, stream.height, stream.width
    metrics = {
        "frames": f,
        "height": h,
        "width": w,
        "fps": fps,
        "latent_shape": list(latents.shape),
        "psnr_vae_roundtrip_db": float(torch.cat(per_frame).mean()),
        "seconds": {"read+encode": t1 - t0, "decode+write": t2 - t1, "total": time.perf_counter() - started},
    }
    write_json(out / "metrics.json", metrics)
    return (
        f"vidinv: encoded {f} frames {h}x{w}; VAE round trip PSNR {metrics['psnr_vae_roundtrip_db']:.2f} dB; "
        f"wrote {out}/ in {metrics['seconds']['total']:.1f}s"
    )
