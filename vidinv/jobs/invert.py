"""`vidinv invert`: encode the clip and invert it; the record lands in `runtime.output_dir/inversion/`.

A record made from the same config fields and the same input latents is reused, not recomputed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vidinv.config import Config, to_yaml
from vidinv.errors import VidinvError
from vidinv.jobs.common import prepare_run_dir
from vidinv.outputs import write_text
from vidinv.planning import check_fits
from vidinv.run_lock import acquire_run_lock, releases_run_locks

RECORD_DIR = "inversion"


def open_run_dir(config: Config, command: str, writes: list[str]) -> Path:
    """The run folder of `vidinv COMMAND`, planned before loading (`check_fits`). One that holds an
    inversion record (or the checkpoint of an interrupted inversion, to resume) may be added to
    without `overwrite`, as long as none of the files this command `writes` is there yet."""
    from vidinv.inversion.record import JSON_NAME, PROGRESS_NAME
    from vidinv.inversion.resume import SUFFIX
    from vidinv.outputs import partial_name

    rt = config.runtime
    path = Path(rt.output_dir)
    record = path / RECORD_DIR
    resumable = (path / (RECORD_DIR + SUFFIX)).is_file() or (partial_name(record) / PROGRESS_NAME).is_file()
    has_inversion = (record / JSON_NAME).is_file() or resumable
    if rt.overwrite or not has_inversion:
        prepare_run_dir(path, rt.overwrite, writes)
    else:
        acquire_run_lock(path)
        clash = [name for name in writes if (path / name).exists()]
        if clash:
            raise VidinvError(
                f"runtime.output_dir: {path} already has {', '.join(clash)} (set runtime.overwrite=true to replace)"
            )
    check_fits(config, command, record_dir_for(config, path))  # before loading
    return path


def record_dir_for(config: Config, out: Path) -> Path:
    """The inversion record's folder: runtime.record_dir, or OUTPUT/inversion (`out` is the run folder)."""
    return Path(config.runtime.record_dir) if config.runtime.record_dir else out / RECORD_DIR


@dataclass
class Inverted:
    """What a command that needs the inversion has after `invert_clip`."""

    out: Path
    models: object
    stream: object  # vidinv.io.stream.ClipStream: read again chunk by chunk to compare
    latents: torch.Tensor
    record: object
    reused: bool
    seconds: dict
    control: object = None  # the ControlNet conditions of a controlled inversion (inversion.control)


def invert_clip(config: Config, *, command: str, quiet: bool, writes: list[str]) -> Inverted:
    """Open the run folder, load the models, stream the clip through the VAE, and invert (or reuse
    the matching record)."""
    from vidinv.editor import VideoEditor
    from vidinv.jobs.streaming import encode_stream, stream_for

    out = open_run_dir(config, command, writes)
    editor = VideoEditor(config, progress=not quiet)
    stream = stream_for(config)
    t0 = time.perf_counter()
    latents = encode_stream(editor.models, stream, progress=not quiet)
    t1 = time.perf_counter()
    control = editor.control(stream.chunks()) if config.inversion.control else None
    record, reused = editor.invert_latents(latents, record_dir=record_dir_for(config, out), control=control)
    t2 = time.perf_counter()
    write_text(out / "config.yaml", to_yaml(config))
    seconds = {"encode": round(t1 - t0, 4), "inversion": round(t2 - t1, 4)}
    return Inverted(out, editor.models, stream, latents, record, reused, seconds, control)


@releases_run_locks
def run(config: Config, *, quiet: bool = False) -> str:
    started = time.perf_counter()
    job = invert_clip(config, command="invert", quiet=quiet, writes=[])
    r = job.record
    f, c, h, w = job.latents.shape
    how = (
        "reused"
        if job.reused
        else f"computed in {r.stats.get('inversion_s', 0):.1f}s, {r.stats.get('frame_calls', 0)} UNet frame-calls"
    )
    return (
        f"vidinv: {r.method} inversion of {f} frames ({c}x{h}x{w} latents), {r.steps} steps, "
        f"guidance {r.guidance_scale:g}: {how}; record in {record_dir_for(config, job.out)}/ "
        f"({time.perf_counter() - started:.1f}s)"
    )
