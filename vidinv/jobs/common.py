"""Steps every job shares: the run folder (`open_run_dir`: locked, stale outputs removed, the run
planned for its own command and refused before loading when it cannot fit), the record's folder,
and `invert_clip` (load, stream the clip through the VAE, invert or reuse the record), which
`vidinv invert`, `reconstruct` and `edit` start from. The loading itself lives in the facade,
`vidinv.editor`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vidinv.config import Config, to_yaml
from vidinv.editor import load_clip, load_models_for
from vidinv.errors import VidinvError
from vidinv.io.writing import CODECS, video_filename
from vidinv.outputs import remove, write_text
from vidinv.planning import check_fits
from vidinv.run_lock import acquire_run_lock, prepare_output_dir

__all__ = [
    "Inverted",
    "invert_clip",
    "load_clip",
    "load_models_for",
    "open_run_dir",
    "prepare_run_dir",
    "record_dir_for",
    "stale_outputs",
]

RUN_VIDEOS = ("edited", "source", "side_by_side", "reconstruction", "roundtrip")  # every command's videos


def stale_outputs(folder: Path, writes: list[str]) -> list[Path]:
    """The outputs of an earlier command in `folder` (any command's videos in any codec, its
    metrics) that a run writing `writes` would not replace: left there, the folder would hold the
    results of two different runs."""
    names = {video_filename(stem, codec) for stem in RUN_VIDEOS for codec in CODECS} | {"metrics.json"}
    return [folder / name for name in sorted(names - set(writes)) if (folder / name).exists()]


def prepare_run_dir(path: str | Path, overwrite: bool, writes: list[str]) -> Path:
    """`prepare_output_dir` for a command that writes `writes`; `overwrite` also removes an earlier
    command's outputs that this run would not replace (`stale_outputs`)."""
    path = prepare_output_dir(path, overwrite)
    if overwrite:
        for stale in stale_outputs(path, writes):
            remove(stale)
    return path


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
