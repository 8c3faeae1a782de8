"""`vidinv invert`: encode the clip and invert it (`vidinv.jobs.common.invert_clip`); the record lands
in `runtime.output_dir/inversion/`.

A record made from the same config fields and the same input latents is reused, not recomputed.
"""

from __future__ import annotations

import time

from vidinv.config import Config
from vidinv.jobs.common import invert_clip, record_dir_for
from vidinv.run_lock import releases_run_locks


@releases_run_locks
def run(config: Config, *, quiet: bool = False) -> str:
    started = time.perf_counter()
    job = invert_clip(config, command="invert", quiet=quiet, writes=[])
    r = job.record
    f, c, h, w = job.latents.shape
    how = (
        "reused"
        if job.reused
        else f"computed in {r.stats.inversion_s or 0:.1f}s, {r.stats.frame_calls or 0} UNet frame-calls"
    )
    return (
        f"vidinv: {r.method} inversion of {f} frames ({c}x{h}x{w} latents), {r.steps} steps, "
        f"guidance {r.guidance_scale:g}: {how}; record in {record_dir_for(config, job.out)}/ "
        f"({time.perf_counter() - started:.1f}s)"
    )
