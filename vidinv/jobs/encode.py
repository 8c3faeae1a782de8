"""`vidinv encode`: decode the clip, VAE round trip in chunks, write the videos and the PSNR.

The first stage of every edit on its own: it shows what the VAE alone costs in quality at the
configured resolution, before any inversion error.
"""

from __future__ import annotations

import time

from vidinv.config import Config, to_yaml
from vidinv.metrics import psnr
from vidinv.outputs import prepare_output_dir, write_json, write_text


def run(config: Config, *, quiet: bool = False) -> str:
    started = time.perf_counter()
    rt = config.runtime
    out = prepare_output_dir(rt.output_dir, rt.overwrite)
    from vidinv.editor import VideoEditor
    from vidinv.io import write_video

    editor = VideoEditor(config, progress=not quiet)
    clip = editor.read()
    t0 = time.perf_counter()
    latents = editor.encode(clip.frames)
    t1 = time.perf_counter()
    roundtrip = editor.decode(latents)
    t2 = time.perf_counter()
    fps = rt.fps or clip.fps
    write_text(out / "config.yaml", to_yaml(config))
    write_video(out / "source.mp4", clip.frames, fps)
    write_video(out / "roundtrip.mp4", roundtrip, fps)
    f, _, h, w = clip.frames.shape
    metrics = {
        "frames": f,
        "height": h,
        "width": w,
        "fps": fps,
        "latent_shape": list(latents.shape),
        "psnr_vae_roundtrip_db": psnr(roundtrip, clip.frames),
        "seconds": {"encode": t1 - t0, "decode": t2 - t1, "total": time.perf_counter() - started},
    }
    write_json(out / "metrics.json", metrics)
    return (
        f"vidinv: encoded {f} frames {h}x{w}; VAE round trip PSNR {metrics['psnr_vae_roundtrip_db']:.2f} dB; "
        f"wrote {out}/ in {metrics['seconds']['total']:.1f}s"
    )
