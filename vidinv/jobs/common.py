"""Steps every job shares (the loading itself lives in the facade, `vidinv.editor`)."""

from pathlib import Path

from vidinv.editor import load_clip, load_models_for
from vidinv.io.writing import CODECS, video_filename
from vidinv.outputs import remove
from vidinv.run_lock import prepare_output_dir

__all__ = ["load_clip", "load_models_for", "prepare_run_dir", "stale_outputs"]

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
